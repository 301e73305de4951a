"""FedAtt (Ji et al., "Learning Private Neural Language Modeling with Attentive Aggregation",
IJCNN 2019; official code shaoxiongji/fed-att; docs/methods/fedatt.md).

The server keeps one global model w. For every layer l (the item table; each MLP weight and
bias), with w_i the participants' trained copies:

    s_i = ||w^l - w_i^l||   (ord 2 as the code: spectral norm for matrices, L2 for vectors;
                             ``att_norm=fro`` uses Frobenius for matrices)
    a_i = softmax_i(s_i)    (the positive distance, as the code: farther clients weigh more)
    w^l <- w^l - step_size * sum_i a_i (w^l - w_i^l) + noise * xi,  xi ~ N(0, I)

Every client replaces its shared block with the new global model.
"""

from dataclasses import dataclass

import torch

from fedca.config.fields import declared
from fedca.aggregators.base import AggConfig, Aggregator, Downloads
from fedca.models.backbones import NCF


def layer_distances(differences: torch.Tensor, norm: str) -> torch.Tensor:
    """[n] distance of each participant for one layer: differences [n, rows, cols] or [n, size]."""
    if differences.dim() == 3 and norm == "spectral":
        return torch.linalg.matrix_norm(differences, ord=2)  # [n]
    return differences.reshape(differences.shape[0], -1).norm(dim=1)  # [n]


def attentive_step(server: torch.Tensor, clients: torch.Tensor, step_size: float, noise: float, norm: str,
                   generator: torch.Generator) -> tuple:
    """One FedAtt update of one layer: server [...], clients [n, ...]; returns (new server, attention [n])."""
    differences = server.unsqueeze(0) - clients  # [n, ...]
    attention = torch.softmax(layer_distances(differences.double(), norm), dim=0)  # [n]
    step = torch.einsum("n,n...->...", attention.to(server.dtype), differences)
    jitter = torch.randn(server.shape, generator=generator, dtype=server.dtype).to(server.device)
    return server - step_size * step + noise * jitter, attention


@dataclass
class FedAttAggConfig(AggConfig):
    """FedAtt: layer-wise attention aggregation (defaults = the official code)."""

    step_size: float = declared(1.2, "the server's step towards the clients (epsilon in the code)", range="(0, inf)")
    noise: float = declared(0.001, "std of the Gaussian noise on the step (the code's dp)", range="[0, inf)")
    att_norm: str = declared("spectral", "spectral: the code's ord=2 on matrices; fro: Frobenius",
                            choices=("spectral", "fro"))


class FedAtt(Aggregator):
    """Layer-wise attention over server-client distances and a server step."""

    name = "fedatt"
    config = FedAttAggConfig

    def __init__(self, *, mlp_layers, step_size: float = 1.2, noise: float = 0.001, att_norm: str = "spectral"):
        if att_norm not in ("spectral", "fro"):
            raise ValueError("att_norm must be 'spectral' or 'fro'")
        self.layout = NCF(list(mlp_layers)).layout()
        self.step_size, self.noise, self.att_norm = step_size, noise, att_norm

    def start(self, items, mlp, users=None):
        return {"items": items.clone(), "mlp": mlp.clone()}

    def _mlp_layers(self):
        """(first, end, shape) of each weight and bias in the flat MLP [P], layer by layer."""
        for inp, out, at, bias_at in self.layout:
            yield at, at + out * inp, (out, inp)
            yield bias_at, bias_at + out, (out,)

    def aggregate(self, uploads, state, ctx):
        everyone = torch.arange(uploads.clients.numel())
        items, attention = attentive_step(state["items"], uploads.item_tables(everyone), self.step_size,
                                          self.noise, self.att_norm, ctx.generator)
        client_mlp = uploads.mlp(everyone)  # [n, P]
        mlp = state["mlp"].clone()
        for first, end, shape in self._mlp_layers():
            layer, _ = attentive_step(mlp[first:end].view(shape), client_mlp[:, first:end].reshape(-1, *shape),
                                      self.step_size, self.noise, self.att_norm, ctx.generator)
            mlp[first:end] = layer.reshape(-1)
        stats = {"att_max": float(attention.max()), "att_entropy": float(-(attention * attention.log()).sum())}
        return Downloads(kind="global", items=items, mlp=mlp, stats=stats), {"items": items, "mlp": mlp}
