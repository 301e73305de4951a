"""Checkpoints load weights-only: a crafted pickle is refused before it runs, older files are
refused with what to do, and ``fedca upgrade-checkpoint`` rewrites them as plain data."""

import json
import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from fedca.aggregators.base import Downloads
from fedca.config.compose import compose_run_config
from fedca.errors import FedcaError
from fedca.results.checkpoint import load_checkpoint, save_checkpoint
from fedca.run import run

FEDCA = Path(sys.executable).with_name("fedca")
RUN = ["run", "dataset=ml100k", "agg=fedavg", "rounds=2", "local_epochs=1", "progress=false", "threads=1",
       "eval.holdout_clients=0.1", "eval.adapt_steps=1"]


class RunsAShellCommand:
    """Unpickling this calls ``os.system(command)``: what a crafted checkpoint would do."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


@pytest.fixture(scope="module")
def source_run(real_data_env, tmp_path_factory) -> Path:
    """A complete 2-round run with held-out clients (so its cold-start block holds tensors)."""
    folder = tmp_path_factory.mktemp("source") / "run"
    run(compose_run_config(RUN[1:]), folder)
    return folder


def _fedca(*args, cwd=None):
    return subprocess.run([str(FEDCA), *args], capture_output=True, text=True, timeout=600, cwd=cwd)


def _crafted_checkpoints(folder: Path, marker: Path) -> dict:
    """Two malicious files: one written by torch.save (zip format), one a bare pickle (legacy format,
    protocol 2 so that the refusal can name the call; protocol 4's framing is refused before that)."""
    payload = {"config": {}, "simulation": RunsAShellCommand(f"touch {marker}")}
    zipped, bare = folder / "zip", folder / "bare"
    zipped.mkdir()
    bare.mkdir()
    torch.save(payload, zipped / "checkpoint.pt")
    (bare / "checkpoint.pt").write_bytes(pickle.dumps(payload, protocol=2))
    return {"zip": zipped, "bare": bare}


def test_the_crafted_payload_really_runs_code_when_unpickled_unsafely(tmp_path):
    marker = tmp_path / "ran"
    folder = _crafted_checkpoints(tmp_path, marker)["zip"]
    torch.load(folder / "checkpoint.pt", weights_only=False)
    assert marker.exists()  # the control: the file is a real exploit, so its refusal below means something


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["zip", "bare"])
def test_resume_from_a_crafted_checkpoint_is_refused_without_running_it(real_data_env, tmp_path, kind):
    marker = tmp_path / "ran"
    folder = _crafted_checkpoints(tmp_path, marker)[kind]
    done = _fedca(*RUN, "resume=true", f"hydra.run.dir={folder}")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refused to load") and "system" in lines[0], done.stderr
    assert not marker.exists()


@pytest.mark.slow
def test_warm_start_from_a_crafted_run_is_refused_without_running_it(source_run, tmp_path):
    marker = tmp_path / "ran"
    folder = tmp_path / "crafted"
    shutil.copytree(source_run, folder)
    torch.save({"simulation": RunsAShellCommand(f"touch {marker}")}, folder / "checkpoint.pt")
    done = _fedca(*RUN, f"init.from_run={folder}", f"hydra.run.dir={tmp_path / 'target'}")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refused to load"), done.stderr
    assert not marker.exists()


def test_checkpoint_of_a_run_loads_weights_only_with_its_cold_start_as_fields(source_run):
    state = torch.load(source_run / "checkpoint.pt", weights_only=True)
    cold_start = state["simulation"]["cold_start"]
    assert cold_start["kind"] == "global" and cold_start["items"].dim() == 2


def test_saving_a_class_instance_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(TypeError, match=r"state\['simulation'\]\['cold_start'\] is a fedca.aggregators.base.Downloads"):
        save_checkpoint(tmp_path, {"simulation": {"cold_start": Downloads(kind="none")}})
    assert not (tmp_path / "checkpoint.pt").exists()


def _as_older_fedca_wrote_it(source_run: Path, folder: Path) -> dict:
    """A copy of ``source_run`` whose checkpoint stores the cold-start block as a Downloads object,
    the way fedca wrote checkpoints before they became plain data; returns the plain state."""
    shutil.copytree(source_run, folder)
    state = load_checkpoint(folder)
    older = {**state, "simulation": {**state["simulation"],
                                     "cold_start": Downloads(**state["simulation"]["cold_start"])}}
    torch.save(older, folder / "checkpoint.pt")
    return state


@pytest.mark.slow
def test_older_checkpoint_is_refused_with_what_to_do_then_upgraded_and_resumed(source_run, tmp_path):
    folder = tmp_path / "older"
    plain = _as_older_fedca_wrote_it(source_run, folder)
    with pytest.raises(FedcaError, match="written by an older fedca .* `fedca upgrade-checkpoint"):
        load_checkpoint(folder)
    (folder / "status.json").write_text(json.dumps({"status": "interrupted", "run_id": "x", "round": 2}))
    refused = _fedca(*RUN, "resume=true", f"hydra.run.dir={folder}")
    assert refused.returncode == 2 and len(refused.stderr.strip().splitlines()) == 1
    assert "older fedca" in refused.stderr
    upgraded = _fedca("upgrade-checkpoint", str(folder / "checkpoint.pt"))
    assert upgraded.returncode == 0 and "upgraded" in upgraded.stdout, upgraded.stderr
    state = load_checkpoint(folder)
    for name, value in plain["simulation"]["cold_start"].items():
        got = state["simulation"]["cold_start"][name]
        assert torch.equal(got, value) if isinstance(value, torch.Tensor) else got == value
    assert torch.equal(state["simulation"]["items"], plain["simulation"]["items"])
    again = _fedca("upgrade-checkpoint", str(folder / "checkpoint.pt"))
    assert again.returncode == 0 and "already plain data" in again.stdout
    resumed = _fedca(*RUN, "resume=true", f"hydra.run.dir={folder}")
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((folder / "status.json").read_text())["status"] == "complete"


def test_upgrade_refuses_a_crafted_file_without_running_it(tmp_path):
    marker = tmp_path / "ran"
    folder = _crafted_checkpoints(tmp_path, marker)["zip"]
    done = _fedca("upgrade-checkpoint", str(folder / "checkpoint.pt"))
    assert done.returncode == 2 and done.stderr.startswith("error: refused to load"), done.stderr
    assert not marker.exists()
