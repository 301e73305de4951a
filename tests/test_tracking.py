"""MLflow tracking (``tracking=mlflow``) against a real local MLflow store, read back with
``mlflow.search_runs``; without the option nothing is imported or written."""

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fedca.results.tracking import MlflowTracker, flat_params, round_metrics

FEDCA = Path(sys.executable).with_name("fedca")
JOBS = ["agg=fedavg", "rounds=2", "local_epochs=1", "progress=false", "threads=1"]


def test_round_metrics_names_every_split_stat_and_schedule_value_with_mlflow_safe_names():
    record = {"round": 3, "train_loss": 0.5, "local_epochs_mean": 2.0, "seconds": 1.5, "schedule": {"w_sim": 0.3},
              "stats": {"w_self": 0.25, "mode": "x"}, "privacy": {}, "val": {"hr@10": 0.1, "ndcg@10": 0.05},
              "test": {"hr@10": 0.2, "ndcg@10": 0.07}}
    assert round_metrics(record) == {"train_loss": 0.5, "local_epochs_mean": 2.0, "seconds": 1.5,
                                     "val/hr_10": 0.1, "val/ndcg_10": 0.05, "test/hr_10": 0.2, "test/ndcg_10": 0.07,
                                     "agg/w_self": 0.25, "schedule/w_sim": 0.3}


def test_flat_params_joins_nested_keys_with_dots():
    assert flat_params({"agg": {"name": "composite", "w_sim": 0.3}, "model": {"mlp_layers": [32, 16]}, "seed": 1}) \
        == {"agg.name": "composite", "agg.w_sim": "0.3", "model.mlp_layers": "[32, 16]", "seed": "1"}


def _runs(uri: str) -> pd.DataFrame:
    import mlflow

    mlflow.set_tracking_uri(uri)
    return mlflow.search_runs(experiment_names=["fedca"])


def _history(uri: str, run_id: str, name: str) -> list:
    from mlflow.tracking import MlflowClient

    return [(m.step, m.value) for m in sorted(MlflowClient(uri).get_metric_history(run_id, name), key=lambda m: m.step)]


def _test_hr(folder: Path) -> list:
    rows = pd.read_csv(folder / "rounds.csv")
    return [(int(r["round"]), float(r["hr@10"])) for _, r in rows[rows["split"] == "test"].iterrows()]


@pytest.mark.slow
def test_a_multirun_logs_a_parent_and_one_child_per_job_with_per_round_metrics(real_data_env, tmp_path):
    sweep = tmp_path / "sweep"
    done = subprocess.run([str(FEDCA), "run", "-m", *JOBS, "seed=0,1", "tracking=mlflow", f"hydra.sweep.dir={sweep}"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    uri = f"sqlite:///{sweep.resolve() / 'mlflow.db'}"
    runs = _runs(uri)
    parents = runs[runs["tags.mlflow.parentRunId"].isna()]
    children = runs[runs["tags.mlflow.parentRunId"].notna()]
    assert len(parents) == 1 and len(children) == 2 and set(runs["status"]) == {"FINISHED"}
    assert set(children["tags.mlflow.parentRunId"]) == {parents["run_id"].iloc[0]}
    from mlflow.tracking import MlflowClient

    for _, child in children.iterrows():
        job = Path(child["tags.fedca.run_dir"])
        summary = json.loads((job / "summary.json").read_text())
        assert job.parent == sweep.resolve() and child["params.seed"] == str(summary["seed"])
        assert child["params.agg.name"] == "fedavg" and child["params.rounds"] == "2"
        assert _history(uri, child["run_id"], "test/hr_10") == _test_hr(job)  # step = round, values as rounds.csv
        assert [step for step, _ in _history(uri, child["run_id"], "train_loss")] == [1, 2]
        artifacts = {item.path for item in MlflowClient(uri).list_artifacts(child["run_id"])}
        assert {"config.yaml", "rounds.csv", "summary.json", "status.json", ".hydra"} <= artifacts
        assert "checkpoint.pt" not in artifacts
    assert sorted(children["params.seed"]) == ["0", "1"]
    again = subprocess.run([str(FEDCA), "run", "-m", *JOBS, "seed=0,1", "tracking=mlflow", "resume=true",
                            f"hydra.sweep.dir={sweep}"], capture_output=True, text=True, timeout=900)
    assert again.returncode == 0, again.stderr
    rerun = _runs(uri)
    assert sorted(rerun["run_id"]) == sorted(runs["run_id"]) and set(rerun["status"]) == {"FINISHED"}  # parent reused


@pytest.mark.slow
def test_a_single_run_goes_to_the_given_tracking_uri(real_data_env, tmp_path):
    uri = f"sqlite:///{tmp_path / 'store' / 'tracking.db'}"
    (tmp_path / "store").mkdir()
    folder = tmp_path / "run"
    done = subprocess.run([str(FEDCA), "run", *JOBS, "tracking=mlflow", f"tracking.uri={uri}",
                           f"hydra.run.dir={folder}"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    runs = _runs(uri)
    assert len(runs) == 1 and runs["status"].iloc[0] == "FINISHED"
    assert "tags.mlflow.parentRunId" not in runs or runs["tags.mlflow.parentRunId"].isna().all()
    assert runs["metrics.test/hr_10"].iloc[0] == _test_hr(folder)[-1][1]  # the latest value is the last round's
    assert not (folder / "mlflow.db").exists()
    from mlflow.tracking import MlflowClient

    artifacts = MlflowClient(uri).get_run(runs["run_id"].iloc[0]).info.artifact_uri
    assert artifacts.startswith((tmp_path / "store" / "mlartifacts").as_uri())  # beside the store, not in the cwd
    assert {item.path for item in MlflowClient(uri).list_artifacts(runs["run_id"].iloc[0])} >= {"rounds.csv"}
    resumed = MlflowTracker(uri, folder, "fedca", "resumed")
    resumed.start(folder, {})  # what a resumed run does: continue the MLflow run its folder names
    assert resumed.run_id == runs["run_id"].iloc[0] and len(_runs(uri)) == 1


@pytest.mark.slow
def test_without_the_option_mlflow_is_never_imported_and_no_store_is_written(real_data_env, tmp_path):
    folder = tmp_path / "run"
    script = ("import sys; from fedca.cli import main; code = main(['run', *sys.argv[1:]]); "
              "sys.exit(3 if 'mlflow' in sys.modules else code)")
    done = subprocess.run([sys.executable, "-c", script, *JOBS, "rounds=1", f"hydra.run.dir={folder}"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in folder.iterdir()) == [".hydra", "checkpoint.pt", "config.yaml", "per_user_test.csv",
                                                         "rounds.csv", "status.json", "summary.json"]
