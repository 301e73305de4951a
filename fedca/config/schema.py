"""Typed run configuration: dataclasses registered in Hydra's ConfigStore.

Every conf/ group file extends one of these schemas, so a misspelt key or a value of the
wrong type fails while Hydra composes the config, with the key named. Range checks live in
``fedca.config.validate``.
"""

from dataclasses import dataclass, field
from typing import Any, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from fedca.aggregators.base import AggConfig
from fedca.aggregators.registry import aggregator_classes


@dataclass
class DatasetConfig:
    """Where a ratings file is and how to read it (one YAML per dataset in conf/dataset/).

    ``download``: fetch a missing file from ``url`` on first use (checksums verified).
    ``date_cols``: year, month and day columns for ``time_rule=date_columns``.
    ``min_interactions``: when set, the dataset's published user filter, used in place of
    ``protocol.min_interactions`` (Last.fm-2K: 5, which gives the figures its papers report).
    """

    name: str = MISSING
    format: str = "delimited"
    subdir: str = ""
    file: str = MISSING
    root: Optional[str] = None
    download: bool = True
    url: Optional[str] = None
    archive_member: Optional[str] = None
    sha256: Optional[str] = None
    archive_md5: Optional[str] = None
    sep: str = "\t"
    header: bool = False
    user_col: str = "0"
    item_col: str = "1"
    rating_col: Optional[str] = "2"
    timestamp_col: Optional[str] = "3"
    time_rule: str = "column"
    date_cols: Optional[List[str]] = None
    min_interactions: Optional[int] = None
    notes: str = ""


@dataclass
class ModelConfig:
    """Backbone: the score function and its local optimiser settings (docs/methods/backbones.md, local_training.md).

    ``optimizer``: ``adam`` (the official FedCA local training), ``alternating_sgd`` (PFedRec)
    or ``sgd`` (GPFedRec: every block at once, each at its own rate). ``item_lr_eta`` > 0: item
    learning rate of the SGD optimisers = lr_embedding * I * item_lr_eta + item_lr_offset
    (PFedRec's official rule; GPFedRec's has offset -lr). ``lr_user``: the user-vector rate of
    ``sgd`` (None: lr_embedding). ``local_epochs``, when set, replaces the top-level
    ``local_epochs`` for this backbone (PFedRec trains one epoch)."""

    name: str = MISSING
    latent_dim: int = 16
    mlp_layers: List[int] = field(default_factory=list)
    lr_embedding: float = 1e-2
    lr_structure: float = 1e-2
    weight_decay: float = 1e-3
    init: str = "official"
    user_init: str = "shared"
    optimizer: str = "adam"
    item_lr_eta: float = 0.0
    item_lr_offset: float = 0.0
    lr_user: Optional[float] = None
    local_epochs: Optional[int] = None


@dataclass
class ScheduleConfig:
    """Per-round values of the composite weights and interpolation (conf/schedule/)."""

    name: str = "constant"


@dataclass
class RampScheduleConfig(ScheduleConfig):
    """linear / cosine: from the agg config's values to these at the last round (None: unchanged)."""

    end_w_sim: Optional[float] = None
    end_w_comp: Optional[float] = None
    end_interpolation: Optional[float] = None


@dataclass
class StepScheduleConfig(ScheduleConfig):
    """step: multiply ``keys`` by ``gamma`` at every milestone (1-based round) passed."""

    milestones: List[int] = field(default_factory=lambda: [50])
    gamma: float = 0.5
    keys: List[str] = field(default_factory=lambda: ["w_sim", "w_comp"])


@dataclass
class AdaptiveScheduleConfig(ScheduleConfig):
    """adaptive: weights follow the untrained-row share the server observes (fedca/schedules/adaptive.py)."""

    rate: float = 0.5
    min_weight: float = 0.0
    max_weight: float = 1.0


@dataclass
class ProtocolConfig:
    """Everything that changes the meaning of a number (written into every result row)."""

    name: str = MISSING
    min_interactions: int = 10
    binarize_threshold: float = 0.0
    duplicates: str = "keep_all"
    num_eval_negatives: int = 99
    shared_val_test_negatives: bool = True
    train_negatives_exclude_eval: bool = False
    num_train_negatives: int = 4
    ties: str = "pessimistic"
    select_by: str = "test"
    early_stop: str = "official"
    early_stop_threshold: float = 1e-4


@dataclass
class EvalConfig:
    """What is measured each evaluation round. ``holdout_clients``: share of users kept out of
    all training and evaluated as new devices (``split=unseen_test``) after ``adapt_steps`` local
    epochs of fine-tuning on their own training data; after the last round, or on every
    evaluation round with ``unseen_every_eval``."""

    mode: str = "sampled"
    ks: List[int] = field(default_factory=lambda: [10])
    select_k: int = 10
    holdout_clients: float = 0.0
    adapt_steps: int = 5
    unseen_every_eval: bool = False


@dataclass
class PrivacyConfig:
    """Per-client clipping and Gaussian noise on the uploaded (V, Theta) (fedca/federation/privacy.py):
    ``clip`` bounds each client's update norm (None: no clipping), the noise std is
    ``noise_multiplier * clip``."""

    clip: Optional[float] = None
    noise_multiplier: float = 0.0


@dataclass
class InitConfig:
    """Warm start (fedca/federation/warm_start.py): ``from_run`` a run folder to start from, its
    ``checkpoint`` (``final``: checkpoint.pt of a complete run; ``selected``: selected.pt, written
    by runs with ``save_selected=true``) and what to ``transfer`` (items | mlp | all)."""

    from_run: Optional[str] = None
    checkpoint: str = "final"
    transfer: str = "all"


@dataclass
class TrackingConfig:
    """Experiment tracking (fedca/results/tracking.py): ``name`` none | mlflow (the mlflow extra);
    ``uri`` any MLflow tracking URI (None: the SQLite file mlflow.db in the sweep or run folder);
    ``experiment`` the MLflow experiment the runs go to."""

    name: str = "none"
    uri: Optional[str] = None
    experiment: str = "fedca"


@dataclass
class RunConfig:
    """The whole run. Top-level names are the ones users type on the command line."""

    dataset: DatasetConfig = MISSING
    model: ModelConfig = MISSING
    agg: Any = MISSING
    schedule: ScheduleConfig = MISSING
    protocol: ProtocolConfig = MISSING
    eval: EvalConfig = field(default_factory=EvalConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    init: InitConfig = field(default_factory=InitConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    rounds: int = 100
    local_epochs: int = 10
    batch_size: int = 256
    seed: int = 0
    eval_every: int = 1
    clients_sample_ratio: float = 1.0
    progress: bool = True
    device: str = "auto"
    threads: int = 0
    kernel: str = "auto"
    checkpoint_every: int = 10
    resume: bool = False
    skip_done: bool = True
    save_selected: bool = False


def register_configs() -> None:
    """Register the schemas that conf/ files extend (``defaults: [/schema/<group>@_here_]``)."""
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    for group, name, node in (
            ("schema", "dataset", DatasetConfig), ("schema", "model", ModelConfig),
            ("schema", "protocol", ProtocolConfig),
            ("schema/agg", "base", AggConfig),
            ("schema/schedule", "base", ScheduleConfig), ("schema/schedule", "ramp", RampScheduleConfig),
            ("schema/schedule", "step", StepScheduleConfig), ("schema/schedule", "adaptive", AdaptiveScheduleConfig)):
        store.store(group=group, name=name, node=node)
    for name, aggregator in aggregator_classes().items():  # each aggregator declares its own schema
        if aggregator.config is not AggConfig:
            store.store(group="schema/agg", name=name, node=aggregator.config)
