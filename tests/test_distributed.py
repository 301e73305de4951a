"""One run across real torchrun ranks (fedca/federation/distributed.py): two local ranks score as
one process bit for bit, resume a single-process checkpoint, and refuse what they cannot run."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from fedca.results.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
RUN = ["run", "dataset=ml100k", "rounds=2", "local_epochs=2", "progress=false", "threads=1"]
TIMINGS = ["run_id", "seconds", "train_seconds", "agg_seconds", "eval_seconds"]


def _fedca(arguments, env, ranks=None, timeout=900):
    launcher = [] if ranks is None else [str(BIN / "torchrun"), f"--nproc-per-node={ranks}"]
    command = [*launcher, str(BIN / "fedca"), *arguments] if ranks else [str(BIN / "fedca"), *arguments]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def _env(tmp_path):
    return dict(os.environ, FEDCA_CACHE_DIR=str(tmp_path / "cache"), OMP_NUM_THREADS="1")


def _rounds(folder):
    return pd.read_csv(folder / "rounds.csv").drop(columns=TIMINGS)


def _assert_same_state(folder, reference):
    ours, theirs = load_checkpoint(folder)["simulation"], load_checkpoint(reference)["simulation"]
    for name in ("user", "items", "mlp"):
        assert torch.equal(ours[name], theirs[name]), name


@pytest.mark.parametrize("agg", ["fedavg", "composite"])
def test_two_ranks_give_the_single_process_run_bit_for_bit(real_data_env, tmp_path, agg):
    env = _env(tmp_path)
    single = _fedca([*RUN, f"agg={agg}", f"hydra.run.dir={tmp_path / 'single'}"], env)
    assert single.returncode == 0, single.stderr
    sharded = _fedca([*RUN, f"agg={agg}", f"hydra.run.dir={tmp_path / 'ranks'}"], env, ranks=2)
    assert sharded.returncode == 0, sharded.stderr
    pd.testing.assert_frame_equal(_rounds(tmp_path / "ranks"), _rounds(tmp_path / "single"), check_exact=True)
    _assert_same_state(tmp_path / "ranks", tmp_path / "single")
    assert not list(Path(tmp_path / "ranks").glob("fedca-rank*"))  # rank 1 wrote nothing there


def test_two_ranks_resume_a_single_process_checkpoint(real_data_env, tmp_path):
    env = _env(tmp_path)
    run = [*RUN, "agg=composite", "rounds=3", "checkpoint_every=1"]
    straight = _fedca([*run, f"hydra.run.dir={tmp_path / 'straight'}"], env)
    assert straight.returncode == 0, straight.stderr
    folder = tmp_path / "resumed"
    process = subprocess.Popen([str(BIN / "fedca"), *run, f"hydra.run.dir={folder}"], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 600
    while not (folder / "checkpoint.pt").exists():
        assert process.poll() is None and time.monotonic() < deadline, "no checkpoint before the run ended"
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=300) == 130
    assert load_checkpoint(folder)["simulation"]["next_round"] < 3
    resumed = _fedca([*run, "resume=true", f"hydra.run.dir={folder}"], env, ranks=2)
    assert resumed.returncode == 0, resumed.stderr
    pd.testing.assert_frame_equal(_rounds(folder), _rounds(tmp_path / "straight"), check_exact=True)
    _assert_same_state(folder, tmp_path / "straight")


def _two_users(folder):
    folder.mkdir()
    lines = ["user,item,rating,timestamp"] + [f"{user},{user * 15 + item},5,{user * 100 + item}"
                                              for user in range(2) for item in range(15)]
    (folder / "ratings.csv").write_text("\n".join(lines) + "\n")
    return ["dataset=csv", f"dataset.root={folder}", "dataset.file=ratings.csv", "dataset.header=true",
            "dataset.user_col=user", "dataset.item_col=item", "dataset.rating_col=rating",
            "dataset.timestamp_col=timestamp", "dataset.time_rule=column", "protocol.num_eval_negatives=3",
            "rounds=1", "progress=false", "threads=1"]


@pytest.mark.parametrize("extra,ranks,message", [
    ([], 3, "torchrun started 3 ranks but the run has 2 training clients; use at most 2 ranks"),
    (["kernel=torch"], 2, "a run across torchrun ranks shards the compiled kernel's local training"),
])
def test_what_ranks_cannot_run_stops_each_rank_with_one_line(tmp_path, extra, ranks, message):
    done = _fedca(["run", *_two_users(tmp_path / "data"), *extra, f"hydra.run.dir={tmp_path / 'run'}"],
                  _env(tmp_path), ranks=ranks, timeout=300)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert done.returncode != 0 and len(errors) == 1 and message in errors[0]  # rank 0's line only
    assert "failed (exitcode: 2)" in done.stderr  # the ranks exit 2; torchrun's agent reports them and exits 1
