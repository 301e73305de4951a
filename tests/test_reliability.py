"""Reliability: identical reruns, resume after SIGKILL/SIGTERM, and checkpoints that survive a kill."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from fedca.config.compose import compose_run_config
from fedca.errors import FedcaError
from fedca.results.checkpoint import load_checkpoint, save_checkpoint
from fedca.run import run

pytestmark = pytest.mark.slow

FEDCA = Path(sys.executable).with_name("fedca")
RUN = ["run", "dataset=filmtrust", "agg=composite", "rounds=6", "local_epochs=2", "progress=false",
       "checkpoint_every=2", "threads=1"]
# rounds.csv columns that differ between two runs of the same config: the random run id and the
# wall-clock timings. Every other column (metrics, loss, epochs, schedule and aggregation
# statistics, protocol fields) must be equal bit for bit.
UNREPEATABLE = ["run_id", "seconds", "train_seconds", "agg_seconds", "eval_seconds"]


def _env(tmp_path):
    return dict(os.environ, FEDCA_CACHE_DIR=str(tmp_path / "cache"))


def _metrics(folder: Path) -> pd.DataFrame:
    return pd.read_csv(folder / "rounds.csv").drop(columns=UNREPEATABLE)


def _assert_same_rounds(folder: Path, reference: Path) -> None:
    pd.testing.assert_frame_equal(_metrics(folder), _metrics(reference), check_exact=True)


def _simulation_leaves(folder: Path) -> dict:
    """{path: value} for every leaf of the checkpoint's simulation state (parameters, Adam and
    server state, schedule, generator states, next round); the one place that knows the
    checkpoint's layout."""
    leaves = {}

    def walk(path: str, value) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(f"{path}.{key}", item)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                walk(f"{path}[{index}]", item)
        else:
            leaves[path] = value

    walk("simulation", load_checkpoint(folder)["simulation"])
    return leaves


def _assert_same_final_state(folder: Path, reference: Path) -> None:
    resumed, uninterrupted = _simulation_leaves(folder), _simulation_leaves(reference)
    assert resumed.keys() == uninterrupted.keys()
    tensors = [path for path, value in uninterrupted.items() if isinstance(value, torch.Tensor)]
    assert {"simulation.user", "simulation.items", "simulation.mlp"} <= set(tensors)
    for path, value in uninterrupted.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(resumed[path], value), path
        else:
            assert resumed[path] == value, path


def _wait_for_round(folder: Path, round_number: int, process, limit=300.0):
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert process.poll() is None, "the run ended before it could be killed"
        try:
            if pd.read_csv(folder / "rounds.csv")["round"].max() >= round_number:
                return
        except (OSError, ValueError, KeyError, pd.errors.EmptyDataError):
            pass
        time.sleep(0.05)
    raise AssertionError("the run never reached the round to kill it at")


@pytest.fixture(scope="module")
def uninterrupted(real_data_env, tmp_path_factory):
    folder = tmp_path_factory.mktemp("uninterrupted")
    env = dict(os.environ, FEDCA_CACHE_DIR=str(folder / "cache"))
    done = subprocess.run([str(FEDCA), *RUN, f"hydra.run.dir={folder / 'run'}"], env=env, capture_output=True,
                          text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    return folder / "run"


def test_same_config_and_seed_give_identical_metrics(real_data_env, tmp_path):
    cfg = compose_run_config(["dataset=filmtrust", "agg=composite", "rounds=2", "local_epochs=2", "progress=false"])
    first, second = run(cfg, tmp_path / "a"), run(cfg, tmp_path / "b")
    assert first["selected"] == second["selected"]
    _assert_same_rounds(tmp_path / "a", tmp_path / "b")
    _assert_same_final_state(tmp_path / "a", tmp_path / "b")


def test_resume_after_sigkill_mid_round_equals_the_uninterrupted_run(uninterrupted, tmp_path):
    folder = tmp_path / "killed"
    process = subprocess.Popen([str(FEDCA), *RUN, f"hydra.run.dir={folder}"], env=_env(tmp_path),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_round(folder, 3, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert json.loads((folder / "status.json").read_text())["status"] == "running"
    done = subprocess.run([str(FEDCA), *RUN, "resume=true", f"hydra.run.dir={folder}"], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    resumed = _metrics(folder)
    assert not resumed.duplicated(["round", "split"]).any()
    _assert_same_final_state(folder, uninterrupted)  # first: a parameter that differs explains a metric that does
    _assert_same_rounds(folder, uninterrupted)
    summary = json.loads((folder / "summary.json").read_text())
    reference = json.loads((uninterrupted / "summary.json").read_text())
    assert summary["selected"] == reference["selected"] and summary["final"] == reference["final"]


def test_sigterm_finishes_the_round_marks_interrupted_and_resumes(uninterrupted, tmp_path):
    folder = tmp_path / "terminated"
    process = subprocess.Popen([str(FEDCA), *RUN, f"hydra.run.dir={folder}"], env=_env(tmp_path),
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    _wait_for_round(folder, 2, process)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130
    assert stderr.strip().startswith("error: interrupted after round")
    status = json.loads((folder / "status.json").read_text())
    assert status["status"] == "interrupted"
    assert load_checkpoint(folder)["simulation"]["next_round"] == status["round"]
    done = subprocess.run([str(FEDCA), *RUN, "resume=true", f"hydra.run.dir={folder}"], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    _assert_same_rounds(folder, uninterrupted)
    _assert_same_final_state(folder, uninterrupted)


def _terminate_after_round(folder: Path, round_number: int, env) -> None:
    process = subprocess.Popen([str(FEDCA), *RUN, f"hydra.run.dir={folder}"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_for_round(folder, round_number, process)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=300) == 130


def test_checkpoint_from_before_newer_fields_resumes_while_they_hold_their_defaults(uninterrupted, tmp_path):
    folder = tmp_path / "older"
    _terminate_after_round(folder, 2, _env(tmp_path))
    state = load_checkpoint(folder)
    for group in ("privacy", "init"):
        del state["config"][group]
    del state["config"]["eval"]["holdout_clients"]
    del state["simulation"]["cold_start"], state["simulation"]["generators"]["privacy"]
    save_checkpoint(folder, state)
    refused = subprocess.run([str(FEDCA), *RUN, "privacy.noise_multiplier=1.0", "privacy.clip=1.0", "resume=true",
                              f"hydra.run.dir={folder}"], env=_env(tmp_path), capture_output=True, text=True,
                             timeout=300)
    assert refused.returncode == 2 and "different config" in refused.stderr
    done = subprocess.run([str(FEDCA), *RUN, "resume=true", f"hydra.run.dir={folder}"], env=_env(tmp_path),
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    _assert_same_rounds(folder, uninterrupted)


def test_resume_with_a_different_config_is_refused(uninterrupted, tmp_path):
    done = subprocess.run([str(FEDCA), *RUN, "seed=5", "resume=true", f"hydra.run.dir={uninterrupted}"],
                          env=_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "different config" in done.stderr


def test_kill_during_checkpoint_writing_leaves_the_previous_checkpoint_loadable(tmp_path):
    writer = textwrap.dedent(f"""
        import torch
        from fedca.results.checkpoint import save_checkpoint
        for step in range(1000000):
            save_checkpoint({str(tmp_path)!r}, {{"step": step, "payload": torch.full((4_000_000,), float(step))}})
    """)
    process = subprocess.Popen([sys.executable, "-c", writer])
    deadline = time.monotonic() + 120
    while not (tmp_path / "checkpoint.pt").exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)
    process.send_signal(signal.SIGKILL)
    process.wait()
    state = load_checkpoint(tmp_path)
    assert state is not None and bool((state["payload"] == float(state["step"])).all())


@pytest.mark.parametrize("kernel", ["torch", "numba"])
def test_nan_loss_stops_the_run_naming_round_and_clients(real_data_env, tmp_path, kernel):
    cfg = compose_run_config(["dataset=filmtrust", "agg=fedavg", "rounds=3", "local_epochs=1", "progress=false",
                              "model.lr_embedding=1e38", f"kernel={kernel}"])
    with pytest.raises(FedcaError, match=r"round \d+: the training loss or parameters are NaN or infinite for \d+ of 1002 clients"):
        run(cfg, tmp_path)
    assert not (tmp_path / "summary.json").exists()
    rounds = tmp_path / "rounds.csv"
    assert not rounds.exists() or pd.read_csv(rounds)[["hr@10", "ndcg@10"]].notna().all().all()


def test_disk_full_gives_one_line_naming_the_cause(real_data_env, tmp_path, monkeypatch):
    import errno

    import fedca.results.run_folder as run_folder

    write_text = run_folder.write_text

    def full_disk(path, text):
        if path.name == "rounds.csv":
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        write_text(path, text)

    cfg = compose_run_config(["dataset=filmtrust", "agg=fedavg", "rounds=2", "local_epochs=1", "progress=false"])
    monkeypatch.setattr(run_folder, "write_text", full_disk)
    with pytest.raises(FedcaError, match="disk full while writing .*rounds.csv") as info:
        run(cfg, tmp_path)
    assert "\n" not in str(info.value)
