"""End-to-end runs on the generated tiny dataset (tests/conftest.py ``tiny_dataset``): the quick
tier's coverage of loading, every method preset, the ``fedca run`` console script and the report,
with no real data and a few seconds a run."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from conftest import TINY_ITEMS, TINY_MAX, TINY_MIN, TINY_USERS
from fedca.config.compose import available, compose_run_config
from fedca.data.fed_data import load_fed_data
from fedca.run import run
from run_checks import assert_complete_two_round_folder

FEDCA = Path(sys.executable).with_name("fedca")
SHORT = ["rounds=2", "local_epochs=1", "progress=false", "threads=1"]


def test_the_tiny_dataset_loads_and_holds_out_each_users_latest_interactions(tiny_dataset, fedca_cache):
    cfg = compose_run_config(tiny_dataset)
    data = load_fed_data(cfg.dataset, cfg.protocol, seed=0)
    assert (data.num_users, data.num_items) == (TINY_USERS, TINY_ITEMS)
    assert TINY_USERS * TINY_MIN <= data.num_interactions <= TINY_USERS * TINY_MAX
    assert data.meta["synthetic"] is True
    assert data.val_negatives.shape == (TINY_USERS, cfg.protocol.num_eval_negatives)
    raw = pd.read_csv(Path(cfg.dataset.root) / cfg.dataset.file, names=["user", "item", "rating", "time"])
    latest = raw.sort_values("time").groupby("user")["item"].agg(lambda items: list(items)[-2:])
    users = [int(u) for u in data.raw_user_ids]
    assert [int(data.raw_item_ids[i]) for i in data.test_items] == [latest[u][1] for u in users]
    assert [int(data.raw_item_ids[i]) for i in data.val_items] == [latest[u][0] for u in users]


@pytest.mark.parametrize("method", available("method"))
def test_every_method_preset_runs_two_rounds_on_the_tiny_dataset(tiny_dataset, fedca_cache, tmp_path, method):
    cfg = compose_run_config([*tiny_dataset, f"+method={method}", *SHORT])
    summary = run(cfg, tmp_path)
    assert_complete_two_round_folder(tmp_path)
    assert (summary["dataset"], summary["num_users"], summary["synthetic"]) == ("csv", TINY_USERS, True)


def test_the_strict_protocol_selects_by_validation_on_the_tiny_dataset(tiny_dataset, fedca_cache, tmp_path):
    cfg = compose_run_config([*tiny_dataset, "agg=fedavg", "protocol=strict", "rounds=3", "local_epochs=1",
                              "progress=false"])
    summary = run(cfg, tmp_path)
    rounds = pd.read_csv(tmp_path / "rounds.csv")
    val = rounds[rounds["split"] == "val"].set_index("round")["hr@10"]
    assert summary["selected"]["round"] == max(r for r in val.index if val[r] == val.max())
    assert (rounds["protocol_name"] == "strict").all()
    assert summary["protocol"]["train_negatives_exclude_eval"] is True


def test_fedca_run_sweeps_aggregators_on_the_tiny_dataset_and_report_tables_them(tiny_dataset, tmp_path):
    """The console script as a user types it: a multirun over composite, FedAvg and two clustering
    aggregators (PerFedRec, FedFast), then ``fedca report`` on the sweep folder."""
    aggs = ["composite", "fedavg", "perfedrec", "fedfast"]
    sweep = tmp_path / "sweep"
    env = dict(os.environ, FEDCA_CACHE_DIR=str(tmp_path / "cache"))
    done = subprocess.run([str(FEDCA), "run", "-m", *tiny_dataset, f"agg={','.join(aggs)}", *SHORT,
                           f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    summaries = [json.loads((sweep / str(job) / "summary.json").read_text()) for job in range(len(aggs))]
    assert [s["agg"] for s in summaries] == aggs
    assert all(s["final"]["round"] == 2 and s["synthetic"] for s in summaries)
    assert all(json.loads((sweep / str(job) / "status.json").read_text())["status"] == "complete"
               for job in range(len(aggs)))

    report = subprocess.run([str(FEDCA), "report", str(sweep)], cwd=tmp_path, env=env, capture_output=True,
                            text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    rows = [line for line in report.stdout.splitlines() if line.startswith("| csv |")]
    assert sorted(line.split(" | ")[2] for line in rows) == sorted(aggs)
