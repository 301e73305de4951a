"""The one aggregator interface: ``aggregate(uploads, state, ctx) -> (downloads, state)``.

Around it, hooks with neutral defaults for methods that need them: ``select`` (the server
picks the participants), ``before_training`` (what participants load before training),
``anchors`` (a pull term in the local loss), ``proximal`` (a squared-distance term to a
per-client target table in the local loss) and ``experts`` (extra models whose scores are
averaged with the client's own at evaluation).

Shapes: N clients, n participants (training order), m clients in a personalised download,
I items, d dims, P MLP size, K cluster or expert models.
"""

import inspect
from dataclasses import dataclass, field, fields
from typing import ClassVar, Dict, List, Optional, Sequence, Tuple

import torch
from omegaconf import MISSING

from fedca.config.fields import check_declared, declared
from fedca.federation.population import Population
from fedca.metrics.means import exact_mean

USER_VECTORS = "user vectors"
TRAINED_ITEMS = "trained item ids"


class Uploads:
    """What the participants send: their trained item tables and MLPs, sample counts and
    per-item training counts. User vectors are reachable only when the aggregator declares
    ``USER_VECTORS`` in its ``reveals``."""

    def __init__(self, population: Population, clients: torch.Tensor, sample_counts: torch.Tensor,
                 row_keys: torch.Tensor, row_counts: torch.Tensor, reveal_users: bool = False,
                 shared: Optional[Tuple[torch.Tensor, torch.Tensor]] = None):
        """``shared``: the blocks the participants actually send (items [n, I, d], mlp [n, P]) when
        they differ from their own state (privacy noise); by default the trained state itself."""
        self._population = population
        self._shared = shared
        self.clients = clients  # [n] population indices
        self.sample_counts = sample_counts  # [n] training instances per client
        self._row_keys = row_keys  # [R] position * I + item
        self._row_counts = row_counts  # [R] how often that item occurred in the client's instances
        self._reveal_users = reveal_users

    def user_vectors(self, positions: torch.Tensor) -> torch.Tensor:
        """[m, d] trained user vectors of the participants at ``positions`` (declared methods only)."""
        if not self._reveal_users:
            raise PermissionError("this aggregator did not declare that the server sees user vectors")
        return self._population.user[self.clients[positions]]

    @property
    def num_items(self) -> int:
        return self._population.store.num_items

    @property
    def num_clients(self) -> int:
        """N, all clients of the federation (not only this round's participants)."""
        return self._population.num_clients

    def item_tables(self, positions: torch.Tensor) -> torch.Tensor:
        """[m, I, d] uploaded item tables of the participants at ``positions`` [m]."""
        if self._shared is not None:
            return self._shared[0][positions]
        return self._population.store.tables(self.clients[positions])

    def mlp(self, positions: torch.Tensor) -> torch.Tensor:
        """[m, P] uploaded MLP parameters of the participants at ``positions`` [m]."""
        if self._shared is not None:
            return self._shared[1][positions]
        return self._population.mlp[self.clients[positions]]

    def weighted_items(self, weights: torch.Tensor) -> torch.Tensor:
        """[I, d] = sum_i weights[i] * V_i over all participants (weights [n]), without copying tables."""
        if self._shared is not None:
            return torch.einsum("n,nid->id", weights.to(self._shared[0]), self._shared[0])  # [I, d]
        return self._population.store.weighted_sum(self.clients, weights)  # [I, d]

    def weighted_mlp(self, weights: torch.Tensor) -> torch.Tensor:
        """[P] = sum_i weights[i] * Theta_i over all participants."""
        return weights.to(self._population.mlp) @ self.mlp(torch.arange(self.clients.numel()))

    def item_counts(self, positions: torch.Tensor) -> torch.Tensor:
        """[m, I] multiplicity of each item in the training instances of the participants at ``positions``."""
        lookup = torch.full((self.clients.numel(),), -1, dtype=torch.long)
        lookup[positions] = torch.arange(positions.numel())
        owner = lookup[self._row_keys // self.num_items]
        keep = owner >= 0
        counts = torch.zeros(positions.numel(), self.num_items, dtype=torch.float64)
        counts[owner[keep], self._row_keys[keep] % self.num_items] = self._row_counts[keep].double()
        return counts


@dataclass
class RoundContext:
    """round (0-based); weights from the schedule (e.g. w_sim, w_comp, interpolation);
    generator for the aggregator's own randomness."""

    round: int
    weights: Dict[str, float]
    generator: torch.Generator


@dataclass
class Downloads:
    """What the server sends back and how clients merge it.

    kind 'none': nothing. kind 'global': items [I, d] (and mlp [P]) for every client, or only
    for ``clients`` when set. kind 'personal': items [m, I, d] (and mlp [m, P]) for ``clients`` [m].
    ``mlp=None`` sends no MLP (the clients keep theirs).
    A receiving client keeps ``keep_local`` of its own block: new = keep_local * own + (1 - keep_local) * sent.
    mlp_columns [S]: when set, only these MLP entries are sent (``mlp`` holds just them, [S] or
    [m, S]); the rest of every client's MLP never changes (personal layers).
    user_clients [c] and user_delta [c, d]: added to those clients' user vectors (FedFast's
    propagation; only for aggregators that declare ``USER_VECTORS``).
    stats: per-round diagnostics of the aggregation weights, written into rounds.csv.
    """

    kind: str
    items: Optional[torch.Tensor] = None
    mlp: Optional[torch.Tensor] = None
    clients: Optional[torch.Tensor] = None
    keep_local: float = 0.0
    mlp_columns: Optional[torch.Tensor] = None
    user_clients: Optional[torch.Tensor] = None
    user_delta: Optional[torch.Tensor] = None
    stats: Dict[str, float] = field(default_factory=dict)


@dataclass
class Anchors:
    """A pull term in the participants' local loss: ``sign * strength * <kappa, theta / ||theta||>``
    over the shared block theta = (V, Theta) (pFedGraph). items [n, I, d] and mlp [n, P] hold
    kappa for the participants in training order."""

    items: torch.Tensor
    mlp: torch.Tensor
    strength: float
    sign: int


@dataclass
class Proximal:
    """A proximal term in the participants' local loss: ``coef * ||V - target||^2`` over the whole
    item table V of each participant (GPFedRec's regulariser, a FedProx-style anchor). target
    [n, I, d] in training order; ``coef`` is per table entry (GPFedRec: reg / (I * d), PyTorch's
    mean-reduced MSE). Rows a client's batches never touch still move towards the target every
    step. Trained with ``model.optimizer=sgd``."""

    target: torch.Tensor
    coef: float


@dataclass
class Experts:
    """Models whose sigmoid scores are averaged with the client's own at evaluation
    (PerFedRec's model adaptation): items [K, I, d], mlp [K, P], and assignment [N], the model
    each client uses."""

    items: torch.Tensor
    mlp: torch.Tensor
    assignment: torch.Tensor


WEIGHTINGS = ("samples", "uniform")


@dataclass
class AggConfig:
    """The schema of ``conf/agg/<choice>.yaml`` for an aggregator without knobs of its own; an
    aggregator with knobs declares a subclass beside it (its ``Aggregator.config``), whose
    ``check`` holds every rule on those knobs."""

    name: str = declared(MISSING, "the aggregator")
    weighting: str = declared("samples", "samples: data-size weights n_i / sum n (local training instances); "
                                         "uniform: 1 / n, the plain mean", choices=WEIGHTINGS)

    def check(self, run) -> None:
        """FedcaError (one line naming the key) when a knob is out of range or does not fit the
        rest of the run config ``run`` (a ``RunConfig``); called before any work starts. The
        declared ranges of every field are checked here; subclasses add their other rules."""
        check_declared(self, "agg.")

    def knob_values(self) -> Dict[str, object]:
        """{field: value} the aggregator is built with; a config whose fields have aliases (another
        code's names) resolves them here, where they are declared, and never rewrites itself."""
        return {item.name: getattr(self, item.name) for item in fields(self)}

    def scheduled_values(self) -> Dict[str, float]:
        """{name: value} of the knobs a schedule may move each round (``conf/schedule/``); empty
        when the aggregator has none, which only ``schedule=constant`` fits."""
        return {}

    def local_term(self) -> Optional[Tuple[str, str]]:
        """(term, the knob that turns it on) when these settings add a term to the clients' local
        loss (``pull``: ``Anchors``; ``proximal``: ``Proximal``), else None; the model's
        optimiser must train it (checked with the rest of the config)."""
        return None


class Aggregator:
    """Base class. ``reveals`` names what the server sees beyond the shared block and sample
    counts (for the protocol record): ``USER_VECTORS``, ``TRAINED_ITEMS``, ...
    ``config``: the dataclass its ``conf/agg/`` files extend; ``from_config`` passes each of its
    fields that the constructor takes (and ``mlp_layers`` when it asks for them).
    ``averages_mlp``: whether the server mixes the clients' MLP blocks (a backbone that keeps a
    personal score function there, PFedRec's, needs one that does not).
    ``one_table``: whether every round's download replaces every client's item table with one
    global block, so all clients hold the server's table between rounds (``store=global``)."""

    name = "aggregator"
    reveals: Tuple[str, ...] = ()
    config: ClassVar[type] = AggConfig
    averages_mlp: ClassVar[bool] = True
    one_table: ClassVar[bool] = False

    @classmethod
    def from_config(cls, agg_cfg: AggConfig, mlp_layers: Sequence[int] = ()) -> "Aggregator":
        takes = inspect.signature(cls.__init__).parameters
        knobs = {name: value for name, value in agg_cfg.knob_values().items() if name in takes}
        if "mlp_layers" in takes:
            knobs["mlp_layers"] = list(mlp_layers)
        return cls(**knobs)

    def start(self, items: torch.Tensor, mlp: torch.Tensor, users: Optional[torch.Tensor] = None) -> dict:
        """The server state before round 1, given the initial shared block every client starts
        from: items [I, d], mlp [P], and users [N, d] only when the server sees user vectors.
        Stateless aggregators keep nothing."""
        return {}

    def select(self, count: int, num_clients: int, state: dict,
               generator: torch.Generator) -> Optional[torch.Tensor]:
        """[n] participants (ascending) the server picks for this round, or None for a uniform
        sample of ``count`` of the ``num_clients`` clients."""
        return None

    def before_training(self, participants: torch.Tensor, state: dict, round_index: int) -> Downloads:
        """What the participants [n] load just before local training (default: nothing)."""
        return Downloads(kind="none")

    def anchors(self, clients: torch.Tensor, state: dict) -> Optional[Anchors]:
        """The pull term of the local loss for ``clients`` [n] (training order), or None."""
        return None

    def proximal(self, clients: torch.Tensor, state: dict) -> Optional[Proximal]:
        """The proximal term of the local loss for ``clients`` [n] (training order), or None."""
        return None

    def experts(self, state: dict) -> List[Experts]:
        """Models averaged with each client's own at evaluation (default: none)."""
        return []

    def aggregate(self, uploads: Uploads, state: dict, ctx: RoundContext) -> Tuple[Downloads, dict]:
        raise NotImplementedError

    def cold_start(self, uploads: Uploads, state: dict, downloads: Downloads) -> Downloads:
        """What a new device gets from the server after this round (``downloads`` is what the
        round sent; ``state`` the server state after it): the global block everyone received,
        else the data-size weighted mean of this round's uploads. Parts it does not send (user
        vector, personal layers) stay at the device's initial template."""
        if downloads.kind == "global" and downloads.clients is None:
            return Downloads(kind="global", items=downloads.items, mlp=downloads.mlp,
                             mlp_columns=downloads.mlp_columns)
        weights = data_weights(uploads.sample_counts, "samples")  # [n]
        return Downloads(kind="global", items=uploads.weighted_items(weights), mlp=uploads.weighted_mlp(weights))


def data_weights(sample_counts: torch.Tensor, weighting: str) -> torch.Tensor:
    """p [n] float64: data-size weights n_i / sum n (``samples``) or 1/n (``uniform``)."""
    if weighting == "uniform":
        return torch.full((sample_counts.numel(),), 1.0 / sample_counts.numel(), dtype=torch.float64)
    counts = sample_counts.double()
    return counts / counts.sum()


def weight_stats(weights: torch.Tensor) -> Dict[str, float]:
    """Diagnostics of a row-stochastic matrix W [m, m]: mean self-weight, row entropy, nonzeros per row."""
    safe = weights.clamp(min=1e-300)
    entropy = -(weights * safe.log()).sum(1)
    return {"w_self": exact_mean(weights.diagonal()), "w_entropy": exact_mean(entropy),
            "w_nonzero": exact_mean((weights > 0).sum(1))}
