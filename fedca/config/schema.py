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
from fedca.config.fields import declared
from fedca.federation.store import StoreConfig
from fedca.metrics.ranking import TIE_POLICIES
from fedca.models.backbones import BACKBONES
from fedca.models.config import ModelConfig
from fedca.schedules.base import ScheduleConfig
from fedca.schedules.registry import schedule_classes


TIME_RULES = ("column", "date_columns", "item_first_appearance", "file_order")


@dataclass
class DatasetConfig:
    """Where a ratings file is and how to read it (one YAML per dataset in conf/dataset/).

    Fields declared ``data=False`` say where the file is, not what is read from it; the others
    are the parsing settings and go into the processed-data cache key.
    """

    name: str = declared(MISSING, "the dataset's name in folders, tables and the cache", data=False)
    format: str = declared("delimited", "file format (delimited: one interaction per line)", choices=("delimited",))
    subdir: str = declared("", "folder under FEDCA_DATA_DIR holding the file", data=False)
    file: str = declared(MISSING, "file name inside subdir", data=False)
    root: Optional[str] = declared(None, "data folder (null: FEDCA_DATA_DIR, else the fedca cache)", data=False)
    download: bool = declared(True, "fetch a missing file from url on first use (checksums verified)", data=False)
    url: Optional[str] = declared(None, "official download address (an archive or the file)", data=False)
    archive_member: Optional[str] = declared(None, "the file's path inside the downloaded archive", data=False)
    sha256: Optional[str] = declared(None, "expected sha256 of the file (the official release)", data=False)
    archive_md5: Optional[str] = declared(None, "expected md5 of the downloaded archive", data=False)
    sep: str = declared("\t", "field separator")
    header: bool = declared(False, "the first line names the columns")
    user_col: str = declared("0", "user id column (name, or 0-based position without a header)")
    item_col: str = declared("1", "item id column")
    rating_col: Optional[str] = declared("2", "rating column (null: every row is an interaction)")
    timestamp_col: Optional[str] = declared("3", "timestamp column for time_rule=column")
    time_rule: str = declared("column", "what orders a user's interactions for the leave-one-out split",
                              choices=TIME_RULES)
    date_cols: Optional[List[str]] = declared(None, "year, month and day columns for time_rule=date_columns")
    min_interactions: Optional[int] = declared(
        None, "the dataset's published user filter, used in place of protocol.min_interactions (null: the "
              "protocol's); Last.fm-2K: 5, which gives the figures its papers report", data=False,
        range="[0, inf)")
    notes: str = declared("", "free text about the file", data=False)


@dataclass
class ProtocolConfig:
    """Everything that changes the meaning of a number: every field goes into every row of
    rounds.csv and into summary.json with the hash of them all (fedca/config/protocol.py).
    Defaults are the official FedCA code's protocol (conf/protocol/fedca.yaml); fields declared
    ``data=True`` shape the processed dataset and key its cache."""

    name: str = declared(MISSING, "the protocol's name (not part of its hash)", data=False)
    min_interactions: int = declared(10, "users with fewer interactions are dropped", range="[0, inf)")
    binarize_threshold: float = declared(0.0, "a rating above it counts as an interaction (implicit feedback)")
    duplicates: str = declared("keep_all", "repeated (user, item) rows: keep_all (the official loader), "
                                           "keep_first or keep_last", choices=("keep_all", "keep_first", "keep_last"))
    num_eval_negatives: int = declared(99, "sampled negatives ranked with each held-out item", range="[1, inf)")
    shared_val_test_negatives: bool = declared(True, "the same sampled negatives rank the val and the test item")
    train_negatives_exclude_eval: bool = declared(False, "training negatives are never eval candidates (false: the "
                                                         "official code's leak)")
    num_train_negatives: int = declared(4, "fresh training negatives per positive, redrawn every round",
                                        range="[0, inf)")
    ties: str = declared("pessimistic", "rank of the held-out item among tied scores: pessimistic (after them, "
                                        "the official metric), optimistic or average", data=False,
                         choices=TIE_POLICIES)
    select_by: str = declared("test", "split whose HR@select_k picks the reported round (test: the official "
                                      "code's best-test round)", data=False, choices=("val", "test"))
    early_stop: str = declared("official", "official: stop local epochs when the running-average loss changes "
                                           "less than early_stop_threshold; off: always all epochs", data=False,
                               choices=("official", "off"))
    early_stop_threshold: float = declared(1e-4, "the loss change that stops local training", data=False,
                                           range="[0, inf)")
    eval_mode: str = declared("sampled", "sampled: rank each held-out item among its sampled negatives; full: "
                                         "among all items, the user's training items masked", data=False,
                             choices=("sampled", "full"))
    ks: List[int] = declared([10], "cut-offs K of HR@K and NDCG@K", data=False, range="[1, inf)")
    select_k: int = declared(10, "the K whose HR picks the reported round (one of ks)", data=False)


@dataclass
class EvalConfig:
    """Who is evaluated besides the federation (what is measured is the protocol's).
    ``holdout_clients``: share of users kept out of all training and evaluated as new devices
    (``split=unseen_test``) after ``adapt_steps`` local epochs of fine-tuning on their own
    training data; after the last round, or on every evaluation round with ``unseen_every_eval``."""

    holdout_clients: float = declared(0.0, "share of users kept out of training and evaluated as new devices",
                                      range="[0, 1)")
    adapt_steps: int = declared(5, "local fine-tuning epochs of a new device before it is evaluated", range="[0, inf)")
    unseen_every_eval: bool = declared(False, "evaluate the new devices on every evaluation round, not only after "
                                              "the last")


@dataclass
class PrivacyConfig:
    """Per-client clipping and Gaussian noise on the uploaded (V, Theta) (fedca/federation/privacy.py):
    ``clip`` bounds each client's update norm (None: no clipping), the noise std is
    ``noise_multiplier * clip``."""

    clip: Optional[float] = declared(None, "bound on each client's update norm (null: no clipping)", range="(0, inf)")
    noise_multiplier: float = declared(0.0, "noise std / clip", range="[0, inf)")


@dataclass
class InitConfig:
    """Warm start (fedca/federation/warm_start.py): ``from_run`` a run folder to start from, its
    ``checkpoint`` (``final``: checkpoint.pt of a complete run; ``selected``: selected.pt, written
    by runs with ``save_selected=true``) and what to ``transfer`` (items | mlp | all)."""

    from_run: Optional[str] = declared(None, "a run folder to start from (null: no warm start)")
    checkpoint: str = declared("final", "final: checkpoint.pt of a complete run; selected: selected.pt",
                               choices=("final", "selected"))
    transfer: str = declared("all", "what the warm start transfers: items, mlp or all")


@dataclass
class TrackingConfig:
    """Experiment tracking (fedca/results/tracking.py): ``name`` none | mlflow (the mlflow extra);
    ``uri`` any MLflow tracking URI (None: the SQLite file mlflow.db in the sweep or run folder);
    ``experiment`` the MLflow experiment the runs go to."""

    name: str = declared("none", "none, or mlflow (the mlflow extra)", choices=("none", "mlflow"))
    uri: Optional[str] = declared(None, "an MLflow tracking URI (null: mlflow.db in the sweep or run folder)")
    experiment: str = declared("fedca", "the MLflow experiment the runs go to")


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
    store: StoreConfig = field(default_factory=StoreConfig)
    rounds: int = declared(100, "federated rounds", range="[1, inf)")
    local_epochs: int = declared(10, "local epochs per round (a backbone's model.local_epochs replaces it)",
                                 range="[1, inf)")
    batch_size: int = declared(256, "training instances per local mini-batch", range="[1, inf)")
    seed: int = declared(0, "seed of every random draw of the run", range="[0, inf)")
    eval_every: int = declared(1, "evaluate every this many rounds", range="[1, inf)")
    clients_sample_ratio: float = declared(1.0, "share of clients that train each round", range="(0, 1]")
    progress: bool = declared(True, "show a progress bar")
    device: str = declared("auto", "auto picks CUDA when present; cpu; cuda", choices=("auto", "cpu", "cuda"))
    threads: int = declared(0, "torch threads (0: all cores, shared among parallel jobs)", range="[0, 4096]")
    kernel: str = declared("auto", "how local training runs: auto, torch (batched) or numba (compiled CPU kernel)")
    checkpoint_every: int = declared(10, "rounds between checkpoints (0: only at the end)", range="[0, inf)")
    resume: bool = declared(False, "continue the run folder from its last checkpoint")
    skip_done: bool = declared(True, "with resume=true, leave a complete run as it is")
    save_selected: bool = declared(False, "also save the selected round's state (selected.pt, for warm starts)")


def register_configs() -> None:
    """Register the schemas that conf/ files extend (``defaults: [/schema/<group>@_here_]``)."""
    store = ConfigStore.instance()
    store.store(name="run_schema", node=RunConfig)
    for group, name, node in (
            ("schema", "dataset", DatasetConfig),
            ("schema", "protocol", ProtocolConfig),
            ("schema/agg", "base", AggConfig)):
        store.store(group=group, name=name, node=node)
    for name, backbone in BACKBONES.items():  # each backbone declares its own schema
        store.store(group="schema/model", name=name, node=backbone.config)
    for name, schedule in schedule_classes().items():  # each schedule declares its own schema
        store.store(group="schema/schedule", name=name, node=schedule.config)
    for name, aggregator in aggregator_classes().items():  # each aggregator declares its own schema
        if aggregator.config is not AggConfig:
            store.store(group="schema/agg", name=name, node=aggregator.config)
