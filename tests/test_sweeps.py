"""Multirun sweeps through the real CLI: the basic launcher, joblib, and failing jobs."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FEDCA = Path(sys.executable).with_name("fedca")
TINY = ["dataset=filmtrust", "rounds=1", "local_epochs=1", "progress=false"]


def _sweep(tmp_path, *overrides):
    env = dict(os.environ, FEDCA_CACHE_DIR=str(tmp_path / "cache"))
    sweep_dir = tmp_path / "sweep"
    done = subprocess.run([str(FEDCA), "run", "-m", *TINY, *overrides, f"hydra.sweep.dir={sweep_dir}"],
                          capture_output=True, text=True, timeout=600, env=env)
    statuses = {p.parent.name: json.loads(p.read_text())["status"] for p in sweep_dir.glob("*/status.json")}
    return done, statuses, sweep_dir


def test_joblib_two_by_two_multirun_completes_every_job(real_data_env, tmp_path):
    done, statuses, sweep_dir = _sweep(tmp_path, "hydra/launcher=joblib", "agg=fedavg,composite", "seed=0,1")
    assert done.returncode == 0, done.stderr
    assert statuses == {"0": "complete", "1": "complete", "2": "complete", "3": "complete"}
    configs = sorted((sweep_dir / job / "config.yaml").read_text().count("name: composite") for job in statuses)
    assert configs == [0, 0, 1, 1]


def test_a_failing_job_keeps_the_other_results_and_exits_non_zero(real_data_env, tmp_path):
    done, statuses, sweep_dir = _sweep(tmp_path, "agg=composite", "agg.k_principal=0,4")
    assert done.returncode == 2
    assert statuses == {"0": "failed", "1": "complete"}
    assert (sweep_dir / "1" / "summary.json").is_file() and not (sweep_dir / "0" / "summary.json").exists()
    assert "Traceback" not in done.stderr
    assert "1 of 2 jobs did not complete" in done.stderr
    report = subprocess.run([str(FEDCA), "report", str(sweep_dir), "--out", str(tmp_path / "report")],
                            capture_output=True, text=True, timeout=120)
    assert report.returncode == 0, report.stderr
    assert "incomplete:" in report.stdout and "(failed: agg.k_principal=0 is out of range" in report.stdout
