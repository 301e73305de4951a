"""The model config group: one dataclass per backbone (``Backbone.config``), the schema of its
``conf/model/`` file; ``check`` holds the rules that only that backbone has."""

from dataclasses import dataclass
from typing import List, Optional

from omegaconf import MISSING

from fedca.config.fields import check_declared, declared
from fedca.config.rules import require


@dataclass
class ModelConfig:
    """Backbone: the score function and its local optimiser settings (docs/methods/backbones.md,
    local_training.md). Item learning rate of the SGD optimisers, when ``item_lr_eta`` > 0:
    lr_embedding * I * item_lr_eta + item_lr_offset (PFedRec's official rule; GPFedRec's has
    offset -lr)."""

    name: str = declared(MISSING, "the backbone")
    latent_dim: int = declared(16, "d, the width of user and item vectors", range="[1, 65536]")
    mlp_layers: List[int] = declared([], "MLP widths from input to output (backbones with an MLP)",
                                     range="[1, 65536]")
    lr_embedding: float = declared(1e-2, "learning rate of the user and item vectors", range="(0, inf)")
    lr_structure: float = declared(1e-2, "learning rate of the MLP or score function", range="(0, inf)")
    weight_decay: float = declared(1e-3, "Adam L2 on the MLP", range="[0, inf)")
    init: str = declared("official", "official: N(0, 1) shared item table and user vector; small: "
                                     "N(0, (0.01 / sqrt(d))^2)", choices=("official", "small"))
    user_init: str = declared("shared", "shared: one u0 for every user, as the official code; random: one "
                                        "draw per user", choices=("shared", "random"))
    optimizer: str = declared("adam", "adam (the official FedCA local training), alternating_sgd (PFedRec) or "
                                      "sgd (GPFedRec: every block at once, each at its own rate)")
    item_lr_eta: float = declared(0.0, "> 0: the item learning rate rule above; 0: item lr = lr_embedding",
                                  range="[0, inf)")
    item_lr_offset: float = declared(0.0, "offset of the item learning rate rule (SGD optimisers only)")
    lr_user: Optional[float] = declared(None, "user-vector rate of optimizer=sgd (null: lr_embedding)",
                                        range="[0, inf)")
    local_epochs: Optional[int] = declared(None, "replaces the top-level local_epochs for this backbone",
                                           range="[1, inf)")

    def check(self, run) -> None:
        """FedcaError (one line naming the key) when a value is outside its declared range or
        breaks a rule only this backbone has; ``run`` is the whole RunConfig. Called before any
        work starts."""
        check_declared(self, "model.")


@dataclass
class NCFModelConfig(ModelConfig):
    """FedNCF (FedCA flavour): score = sigmoid(MLP([u ; V[j]])), ReLU between layers, MLP only."""

    mlp_layers: List[int] = declared([32, 16, 8, 1], "MLP widths: the first 2 * latent_dim, the last 1",
                                     range="[1, 65536]")

    def check(self, run) -> None:
        super().check(run)
        layers = list(self.mlp_layers)
        require(len(layers) >= 2, "model.mlp_layers", layers, "needs at least an input and an output width")
        require(layers[0] == 2 * self.latent_dim, "model.mlp_layers", layers,
                f"the first width must be 2 * latent_dim = {2 * self.latent_dim}")
        require(layers[-1] == 1, "model.mlp_layers", layers, "the last width must be 1")


@dataclass
class PFedRecModelConfig(ModelConfig):
    """PFedRec: score = sigmoid(w_i . V[j] + b_i), no user embedding; (w_i, b_i) is the personal
    score function, trained as the official code: one epoch, per mini-batch a plain SGD step of
    (w_i, b_i), then one of the item rows (the code uses d = 32: model.latent_dim=32)."""

    optimizer: str = declared("alternating_sgd", "PFedRec's alternating SGD")
    lr_structure: float = declared(0.1, "learning rate of the score function (w_i, b_i)", range="(0, inf)")
    lr_embedding: float = declared(0.1, "base of the item learning rate", range="(0, inf)")
    item_lr_eta: float = declared(80.0, "item lr = lr_embedding * I * item_lr_eta (official); 0: lr_embedding",
                                  range="[0, inf)")
    weight_decay: float = declared(0.0, "no weight decay", range="[0, inf)")
    local_epochs: Optional[int] = declared(1, "one local epoch, as the official code", range="[1, inf)")
