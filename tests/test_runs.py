"""End-to-end runs on ML-100K: every aggregator, the run folder and the house rules."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from choices import runnable_pairs
from fedca.aggregators.registry import aggregator_classes
from fedca.config.compose import available, compose_run_config
from fedca.run import run
from run_checks import assert_complete_two_round_folder

REPO = Path(__file__).resolve().parents[1]


SMOKE_CASES = runnable_pairs()  # every (agg, model) pair of conf/ that fedca runs (tests/choices.py)


def test_every_agg_and_model_choice_is_smoke_run():
    assert {agg for agg, _ in SMOKE_CASES} == set(available("agg"))
    assert {model for _, model in SMOKE_CASES} == set(available("model"))


@pytest.mark.parametrize("agg,model", list(SMOKE_CASES), ids=[f"{a}-{m}" for a, m in SMOKE_CASES])
def test_two_round_smoke_run_of_every_aggregator(real_data_env, tmp_path, agg, model):
    cfg = compose_run_config([*SMOKE_CASES[(agg, model)], "rounds=2", "progress=false", "local_epochs=2"])
    summary = run(cfg, tmp_path)
    assert_complete_two_round_folder(tmp_path)
    assert summary["selected"]["round"] in (1, 2)
    assert summary["protocol"]["name"] == "fedca"


@pytest.mark.parametrize("agg,sees", [("fedavg", []), ("composite", ["trained item ids"]),
                                     ("fedfast", ["user vectors"]), ("perfedrec", ["user vectors"])])
def test_protocol_record_names_what_the_server_sees(real_data_env, tmp_path, agg, sees):
    cfg = compose_run_config([f"agg={agg}", "rounds=1", "progress=false", "local_epochs=1"])
    assert run(cfg, tmp_path)["protocol"]["server_sees"] == sees


def test_composite_learns_beyond_chance_in_three_rounds(real_data_env, tmp_path):
    cfg = compose_run_config(["agg=composite", "rounds=3", "progress=false"])
    summary = run(cfg, tmp_path)
    assert summary["final"]["test"]["hr@10"] > 0.15  # random ranking of 100 candidates gives 0.10


def test_summary_selects_by_validation_under_strict(real_data_env, tmp_path):
    cfg = compose_run_config(["agg=fedavg", "rounds=3", "progress=false", "protocol=strict", "local_epochs=1"])
    summary = run(cfg, tmp_path)
    rounds = pd.read_csv(tmp_path / "rounds.csv")
    val = rounds[rounds["split"] == "val"].set_index("round")["hr@10"]
    assert summary["selected"]["round"] == max(r for r in val.index if val[r] == val.max())
    assert (rounds["protocol_name"] == "strict").all()
    assert summary["protocol"]["train_negatives_exclude_eval"] is True


@pytest.mark.slow
def test_cli_run_writes_rounds_and_summary(real_data_env, tmp_path):
    fedca = Path(sys.executable).with_name("fedca")
    out = tmp_path / "run"
    done = subprocess.run([str(fedca), "run", "dataset=ml100k", "rounds=2", "local_epochs=1", "progress=false",
                           f"hydra.run.dir={out}"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (out / "rounds.csv").is_file() and (out / "summary.json").is_file()
    assert json.loads((out / "summary.json").read_text())["agg"] == "composite"


def test_every_agg_config_names_an_aggregator_module_and_back():
    names = {compose_run_config(SMOKE_CASES[next(pair for pair in SMOKE_CASES if pair[0] == choice)]).agg.name
             for choice in available("agg")}
    assert names == set(aggregator_classes())
    modules = {aggregator.__module__.rpartition(".")[2] for aggregator in aggregator_classes().values()}
    assert modules <= {p.stem for p in (REPO / "fedca" / "aggregators").glob("*.py")}


def test_hot_path_has_no_per_client_objects_or_pandas():
    offenders = []
    for folder in ("federation", "aggregators"):
        for path in (REPO / "fedca" / folder).glob("*.py"):
            text = path.read_text()
            if re.search(r"deepcopy|import pandas|\.tolist\(\)\s*:|for \w+ in range\((n|num_clients|m)\)", text):
                offenders.append(path.name)
    assert offenders == []
