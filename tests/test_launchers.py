"""Sweeps through Hydra's Ray and submitit launchers, for real: the same jobs as the basic launcher.

The Ray test starts a real local Ray cluster (``ray start --head``) and joins it through
``hydra/launcher=fedca_ray``. Ray's agents listen on the machine's addresses and probe outside
hosts to find their own, so the cluster and the sweep run in a network namespace of their own
(``unshare -n``) that holds only the loopback interface: nothing leaves 127.0.0.1, and the
cluster is stopped before the namespace ends.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.heavy]

BIN = Path(sys.executable).parent
JOBS = ["dataset=filmtrust", "rounds=2", "local_epochs=1", "progress=false", "threads=1", "agg=composite",
        "seed=0,1"]
RAY_PORT = 6399


def _env(tmp_path):
    return dict(os.environ, FEDCA_CACHE_DIR=str(tmp_path / "cache"), RAY_USAGE_STATS_ENABLED="0")


def _results(sweep_dir: Path) -> dict:
    """{job: (status, final metrics, rounds.csv rows)} of every job folder of a sweep, without
    the columns that differ between any two runs (run_id, wall times)."""
    results = {}
    for status in sorted(sweep_dir.glob("*/status.json")):
        job = status.parent
        summary = json.loads((job / "summary.json").read_text())
        rounds = (job / "rounds.csv").read_text().splitlines()
        header = rounds[0].split(",")
        timing = {i for i, name in enumerate(header) if "seconds" in name or name == "run_id"}
        rows = [",".join(v for i, v in enumerate(line.split(",")) if i not in timing) for line in rounds]
        results[job.name] = (json.loads(status.read_text())["status"], summary["final"], rows)
    return results


@pytest.fixture(scope="module")
def basic_sweep(real_data_env, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("basic")
    sweep_dir = tmp_path / "sweep"
    done = subprocess.run([str(BIN / "fedca"), "run", "-m", *JOBS, f"hydra.sweep.dir={sweep_dir}"],
                          capture_output=True, text=True, timeout=900, env=_env(tmp_path))
    assert done.returncode == 0, done.stderr
    return _results(sweep_dir)


def test_submitit_local_runs_the_same_jobs_as_the_basic_launcher(basic_sweep, tmp_path):
    sweep_dir = tmp_path / "sweep"
    done = subprocess.run([str(BIN / "fedca"), "run", "-m", *JOBS, "hydra/launcher=submitit_local",
                           f"hydra.sweep.dir={sweep_dir}"], capture_output=True, text=True, timeout=900,
                          env=_env(tmp_path))
    assert done.returncode == 0, done.stderr
    results = _results(sweep_dir)
    assert sorted(results) == ["0", "1"] and all(status == "complete" for status, _, _ in results.values())
    assert results == basic_sweep


def test_ray_cluster_on_loopback_runs_the_same_jobs_as_the_basic_launcher(basic_sweep, tmp_path):
    sweep_dir = tmp_path / "sweep"
    script = "\n".join([
        "set -u",
        "ip link set lo up",
        f"'{BIN / 'ray'}' start --head --node-ip-address=127.0.0.1 --port={RAY_PORT} --num-cpus=2 "
        "--include-dashboard=false --disable-usage-stats > ray.log 2>&1 || { cat ray.log; exit 3; }",
        " ".join([f"'{BIN / 'fedca'}'", "run", "-m", *JOBS, "hydra/launcher=fedca_ray",
                  f"hydra.launcher.ray.init.address=127.0.0.1:{RAY_PORT}", f"hydra.sweep.dir='{sweep_dir}'"]),
        "code=$?",
        f"'{BIN / 'ray'}' stop --force > /dev/null 2>&1",
        "exit $code",
    ])
    assert shutil.which("unshare"), "the Ray test needs unshare (util-linux) for its loopback-only namespace"
    done = subprocess.run(["unshare", "-n", "bash", "-c", script], capture_output=True, text=True, timeout=900,
                          env=_env(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    results = _results(sweep_dir)
    assert sorted(results) == ["0", "1"] and all(status == "complete" for status, _, _ in results.values())
    assert results == basic_sweep
