"""`fedca report --baseline`: per-user test metrics of the selected round, paired tests in the table."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from fedca.results.significance import paired_t_test

pytestmark = pytest.mark.slow

FEDCA = Path(sys.executable).with_name("fedca")


@pytest.fixture(scope="module")
def sweep(real_data_env, tmp_path_factory):
    root = tmp_path_factory.mktemp("significance")
    env = dict(os.environ, FEDCA_CACHE_DIR=str(root / "cache"))
    done = subprocess.run([str(FEDCA), "run", "-m", "dataset=filmtrust", "rounds=3", "local_epochs=1", "progress=false",
                           "agg=fedavg,composite", "seed=0,1,2", f"hydra.sweep.dir={root / 'sweep'}"],
                          capture_output=True, text=True, timeout=1200, env=env)
    assert done.returncode == 0, done.stderr
    return root


def test_each_run_saves_the_per_user_test_metrics_of_its_selected_round(sweep):
    for job in sorted((sweep / "sweep").glob("[0-9]*")):
        summary = json.loads((job / "summary.json").read_text())
        users = pd.read_csv(job / "per_user_test.csv")
        assert users["round"].unique().tolist() == [summary["selected"]["round"]]
        assert len(users) == summary["num_users"] and users["user"].is_unique
        for name, value in summary["selected"]["test"].items():
            assert users[name].mean() == pytest.approx(value, rel=1e-12, abs=1e-15)


def test_report_pairs_composite_with_fedavg_over_seeds_and_users(sweep):
    out = sweep / "report"
    done = subprocess.run([str(FEDCA), "report", str(sweep / "sweep"), "--out", str(out), "--baseline", "fedavg"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    runs = pd.read_csv(out / "results.csv").set_index(["agg", "seed"])["test_hr@10"]
    expected = paired_t_test([runs["composite", s] for s in (0, 1, 2)], [runs["fedavg", s] for s in (0, 1, 2)])
    table = pd.read_csv(out / "significance.csv")
    assert table["agg"].tolist() == ["composite"]
    row = table.iloc[0]
    assert (row["n"], row["users"]) == (3, json.loads((sweep / "sweep" / "0" / "summary.json").read_text())["num_users"])
    assert row["difference"] == pytest.approx(expected.mean_difference, abs=1e-12)
    assert row["p_seeds"] == pytest.approx(expected.p_value, rel=1e-9)
    assert 0 <= row["p_users"] <= 1
    header = next(line for line in done.stdout.splitlines() if line.startswith("| dataset"))
    assert header.rstrip(" |").endswith("vs fedavg (Δ test_hr@10)")
    assert "| baseline |" in done.stdout and f"{row['difference']:+.4f}" in done.stdout
    assert "vs fedavg" in (out / "results.tex").read_text()


def test_an_unknown_baseline_stops_with_one_line(sweep):
    done = subprocess.run([str(FEDCA), "report", str(sweep / "sweep"), "--out", str(sweep / "bad"),
                           "--baseline", "nosuch"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["error: --baseline nosuch: no run has agg=nosuch"]
