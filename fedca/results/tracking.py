"""MLflow tracking (``tracking=mlflow``, the ``mlflow`` extra): one MLflow run per fedca run.

Each run logs its config as params (flattened: ``agg.w_sim``, ``model.mlp_layers``, ...), one
metric point per round with the round as step (``val/hr_10``, ``test/ndcg_10``,
``unseen_test/hr_10``, ``train_loss``, ``seconds``, ``agg/<stat>``, ``schedule/<key>``; MLflow
names allow no ``@``), then the run folder's files as artifacts (not the ``*.pt`` checkpoints,
which can be GBs) and its status (FINISHED, FAILED, KILLED). In a multirun the sweep is a
parent run (``SweepParentRun``, a Hydra callback, opens it before the first job and closes it
after the last; its id is kept in ``<sweep dir>/mlflow_parent.json`` so a resumed sweep reuses
it) and every job a child run tagged ``mlflow.parentRunId``. A resumed run continues the MLflow
run whose id it wrote into ``<run dir>/mlflow_run.json`` (rounds replayed after a kill are
logged again, with the same values).

The store is ``tracking.uri``, any MLflow tracking URI; by default the SQLite file
``mlflow.db`` in the sweep folder (multirun) or the run folder, no server needed, with the
artifacts in ``mlartifacts/`` beside it (beside any SQLite store's file). Nothing here imports mlflow unless tracking is on.
"""

import importlib.util
import json
import sys
import time
from pathlib import Path
from typing import Optional

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from fedca.results.atomic import write_json

PARENT_FILE = "mlflow_parent.json"
RUN_FILE = "mlflow_run.json"
SKIPPED_ARTIFACTS = (".pt",)


def store_uri(uri: Optional[str], folder: Path) -> str:
    """``uri``, or the default: the SQLite file ``folder/mlflow.db``."""
    return uri or f"sqlite:///{Path(folder).resolve() / 'mlflow.db'}"


def artifact_location(uri: str) -> Optional[str]:
    """Where a new experiment keeps its artifacts: ``mlartifacts/`` beside a SQLite store's file
    (MLflow's own default, ``./mlruns``, would land in whatever folder fedca was started from);
    for other stores (a tracking server) the store decides (None)."""
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        return None
    return (Path(uri[len(prefix):]).resolve().parent / "mlartifacts").as_uri()


def _client_and_experiment(uri: Optional[str], folder: Path, experiment: str):
    """(MlflowClient, experiment id), creating the experiment if it does not exist yet."""
    from mlflow.tracking import MlflowClient

    resolved = store_uri(uri, folder)
    client = MlflowClient(tracking_uri=resolved)
    found = client.get_experiment_by_name(experiment)
    if found is not None:
        return client, found.experiment_id
    return client, client.create_experiment(experiment, artifact_location=artifact_location(resolved))


def flat_params(config: dict, prefix: str = "") -> dict:
    """``{"agg": {"w_sim": 0.3}}`` -> ``{"agg.w_sim": "0.3"}``; lists stay one value."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_params(value, f"{name}."))
        else:
            flat[name] = str(value)
    return flat


def round_metrics(record: dict) -> dict:
    """The MLflow metrics of one round record (see the module docstring for the names)."""
    metrics = {key: record[key] for key in ("train_loss", "local_epochs_mean", "seconds") if key in record}
    for split in ("val", "test", "unseen_test"):
        metrics.update({f"{split}/{name.replace('@', '_')}": value for name, value in record.get(split, {}).items()})
    for group in ("stats", "schedule", "privacy"):
        prefix = "agg" if group == "stats" else group
        metrics.update({f"{prefix}/{name}": value for name, value in (record.get(group) or {}).items()
                        if isinstance(value, (int, float)) and not isinstance(value, bool)})
    return {name.replace("@", "_"): float(value) for name, value in metrics.items()}


class MlflowTracker:
    """Logs one fedca run into MLflow; ``run.py`` calls ``start``, ``log_round`` and ``end``."""

    def __init__(self, uri: Optional[str], store_folder: Path, experiment: str, run_name: str,
                 parent_run_id: Optional[str] = None):
        from mlflow.entities import Metric, Param  # noqa: F401  (fails early when the extra is missing)

        self.uri, self.store_folder, self.experiment = uri, Path(store_folder), experiment
        self.run_name, self.parent_run_id = run_name, parent_run_id
        self.client = self.run_id = None

    def start(self, out_dir: Path, config: dict) -> None:
        """Open the MLflow run of ``out_dir`` (the one a resumed run wrote before, else a new one)."""
        from mlflow.entities import Param

        self.client, experiment_id = _client_and_experiment(self.uri, self.store_folder, self.experiment)
        previous = _read_json(Path(out_dir) / RUN_FILE)
        if previous and previous.get("uri") == store_uri(self.uri, self.store_folder):
            self.run_id = previous["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        tags = {"fedca.run_dir": str(Path(out_dir).resolve())}
        if self.parent_run_id:
            tags["mlflow.parentRunId"] = self.parent_run_id
        self.run_id = self.client.create_run(experiment_id, run_name=self.run_name, tags=tags).info.run_id
        write_json(Path(out_dir) / RUN_FILE, {"run_id": self.run_id, "uri": store_uri(self.uri, self.store_folder)})
        self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in flat_params(config).items()])

    def log_round(self, record: dict) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(name, value, now, record["round"])
                                                    for name, value in round_metrics(record).items()])

    def end(self, out_dir: Path, status: str) -> None:
        """Upload the run folder's files (checkpoints excepted) and close the run with ``status``
        (FINISHED, FAILED or KILLED); nothing when the run failed before ``start``."""
        if self.run_id is None:
            return
        out_dir = Path(out_dir)
        for path in sorted(out_dir.rglob("*")):
            relative = path.relative_to(out_dir)
            if path.is_file() and _is_artifact(relative):
                folder = str(relative.parent)
                self.client.log_artifact(self.run_id, str(path), None if folder == "." else folder)
        self.client.set_terminated(self.run_id, status=status)


def _is_artifact(relative: Path) -> bool:
    """A run folder file to upload: not a checkpoint, not a half-written temp file, not the
    default store that a single run keeps in its own folder."""
    return not (relative.suffix in SKIPPED_ARTIFACTS or relative.name.startswith((".", "mlflow.db"))
                or relative.parts[0] == "mlartifacts")


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def job_tracker(tracking, out_dir: Path, sweep_dir: Optional[Path], run_name: str) -> MlflowTracker:
    """The tracker of one Hydra job: a child of the sweep's parent run in a multirun (``sweep_dir``)."""
    parent = _read_json(Path(sweep_dir) / PARENT_FILE) if sweep_dir is not None else None
    return MlflowTracker(tracking.uri, sweep_dir if sweep_dir is not None else out_dir, tracking.experiment,
                         run_name, parent["run_id"] if parent else None)


class SweepParentRun(Callback):
    """Hydra callback: with ``tracking=mlflow``, the sweep's parent MLflow run (module docstring)."""

    def on_multirun_start(self, config, **kwargs) -> None:
        tracking = OmegaConf.select(config, "tracking")
        if tracking is None or tracking.name != "mlflow":
            return
        if importlib.util.find_spec("mlflow") is None:
            print('error: tracking=mlflow needs the mlflow extra: pip install "fedca[mlflow]"', file=sys.stderr)
            sys.exit(2)
        sweep_dir = Path(config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        client, experiment_id = _client_and_experiment(tracking.uri, sweep_dir, tracking.experiment)
        previous = _read_json(sweep_dir / PARENT_FILE)
        if previous and previous.get("uri") == store_uri(tracking.uri, sweep_dir):
            client.update_run(previous["run_id"], status="RUNNING")
            return
        run = client.create_run(experiment_id, run_name=f"sweep {sweep_dir.name}",
                                tags={"fedca.sweep_dir": str(sweep_dir.resolve())})
        write_json(sweep_dir / PARENT_FILE, {"run_id": run.info.run_id, "uri": store_uri(tracking.uri, sweep_dir)})

    def on_multirun_end(self, config, **kwargs) -> None:
        tracking = OmegaConf.select(config, "tracking")
        parent = _read_json(Path(config.hydra.sweep.dir) / PARENT_FILE)
        if tracking is None or tracking.name != "mlflow" or parent is None:
            return
        from mlflow.tracking import MlflowClient

        MlflowClient(tracking_uri=parent["uri"]).set_terminated(parent["run_id"], status="FINISHED")
