"""The protocol as one record: every field in rounds.csv and summary.json with its hash,
the report's guard by hash, the dataset cache key from field metadata, and moved keys."""

import json
import os
import subprocess
import sys
from dataclasses import fields, make_dataclass, replace
from pathlib import Path

import pandas as pd
import pytest

from fedca.config.compose import compose_run_config
from fedca.config.fields import data_values, declared
from fedca.config.moved import MOVED_KEYS, moved_into_place, moved_overrides
from fedca.config.protocol import (differing_fields, protocol_hash, protocol_in_force, protocol_values,
                                   recorded_values)
from fedca.config.schema import DatasetConfig, ProtocolConfig
from fedca.data import fed_data
from fedca.errors import FedcaError
from fedca.results.report import aggregate, collect, protocols_of
from fedca.run import run

FEDCA = Path(sys.executable).parent / "fedca"
PROTOCOL_FIELDS = [item.name for item in fields(ProtocolConfig)]

# a value different from each field's value in protocol=fedca, for the hash and cache-key tests
CHANGED = {"min_interactions": 11, "binarize_threshold": 3.0, "duplicates": "keep_first", "num_eval_negatives": 50,
           "shared_val_test_negatives": False, "train_negatives_exclude_eval": True, "num_train_negatives": 5,
           "ties": "average", "select_by": "val", "early_stop": "off", "early_stop_threshold": 1e-3,
           "eval_mode": "full", "ks": [5, 10], "select_k": 5, "name": "renamed"}


def fedca_protocol() -> ProtocolConfig:
    return compose_run_config(["protocol=fedca"]).protocol


def test_the_changed_values_cover_every_protocol_field():
    assert set(CHANGED) == set(PROTOCOL_FIELDS)


@pytest.mark.parametrize("name", [n for n in PROTOCOL_FIELDS if n != "name"])
def test_changing_any_protocol_field_changes_the_hash(name):
    base = fedca_protocol()
    changed = replace(base, **{name: CHANGED[name]}, **({"ks": [5, 10]} if name == "select_k" else {}))
    assert protocol_hash(protocol_values(changed)) != protocol_hash(protocol_values(base))
    assert name in differing_fields(protocol_values(base), protocol_values(changed))


def test_the_name_is_not_part_of_the_hash_and_the_hash_is_twelve_hex_digits():
    base = fedca_protocol()
    digest = protocol_hash(protocol_values(base))
    assert digest == protocol_hash(protocol_values(replace(base, name="renamed")))
    assert len(digest) == 12 and int(digest, 16) >= 0
    assert protocol_hash(protocol_values(base)) != protocol_hash(protocol_values(compose_run_config(
        ["protocol=strict"]).protocol))


def test_a_datasets_own_user_filter_is_the_protocol_in_force_without_rewriting_the_config():
    cfg = compose_run_config(["dataset=lastfm2k"])
    assert cfg.dataset.min_interactions == 5 and cfg.protocol.min_interactions == 10  # the config as written
    assert protocol_in_force(cfg.dataset, cfg.protocol).min_interactions == 5


@pytest.mark.parametrize("name", [n for n in PROTOCOL_FIELDS if n != "name"])
def test_the_cache_key_follows_exactly_the_fields_declared_to_shape_the_data(name):
    spec, base = compose_run_config([]).dataset, fedca_protocol()
    changed = replace(base, **{name: CHANGED[name]}, **({"ks": [5, 10]} if name == "select_k" else {}))
    shapes_data = next(item for item in fields(ProtocolConfig) if item.name == name).metadata["data"]
    moved = fed_data._cache_key("abc", spec, base, 0) != fed_data._cache_key("abc", spec, changed, 0)
    assert moved == shapes_data


def test_the_data_shaping_protocol_fields_are_the_filters_and_the_negatives():
    shaping = [item.name for item in fields(ProtocolConfig) if item.metadata["data"]]
    assert shaping == ["min_interactions", "binarize_threshold", "duplicates", "num_eval_negatives",
                       "shared_val_test_negatives", "train_negatives_exclude_eval", "num_train_negatives"]


def test_a_dataset_parsing_field_moves_the_cache_key_and_a_location_field_does_not():
    spec, protocol = compose_run_config([]).dataset, fedca_protocol()
    key = fed_data._cache_key("abc", spec, protocol, 0)
    assert fed_data._cache_key("abc", replace(spec, sep=","), protocol, 0) != key
    assert fed_data._cache_key("abc", replace(spec, root="/elsewhere", notes="x"), protocol, 0) == key


def test_a_field_declared_without_thought_joins_the_cache_key():
    grown = make_dataclass("Grown", [("new_knob", int, declared(3, "a field nobody marked"))], bases=(ProtocolConfig,))
    assert "new_knob" in data_values(grown(name="x"))
    assert "ties" not in data_values(grown(name="x"))


def test_recorded_values_of_a_run_written_before_the_evaluation_fields_joined_the_protocol():
    old_summary = {"select_metric": "hr@20", "protocol": {
        **{k: v for k, v in protocol_values(fedca_protocol()).items() if k not in ("eval_mode", "ks", "select_k")},
        "eval_mode": "full", "ks": [10, 20]}}
    values = recorded_values(old_summary)
    assert list(values) == PROTOCOL_FIELDS
    assert values["eval_mode"] == "full" and values["ks"] == [10, 20] and values["select_k"] == 20
    current = protocol_values(replace(fedca_protocol(), eval_mode="full", ks=[10, 20], select_k=20))
    assert protocol_hash(values) == protocol_hash(current)
    assert recorded_values({"protocol": None}) is None


def test_moved_keys_are_read_at_their_new_place_in_saved_configs_and_overrides():
    saved = {"eval": {"mode": "full", "ks": [5], "select_k": 5, "holdout_clients": 0.0}, "protocol": {"name": "x"}}
    moved = moved_into_place(saved)
    assert moved == {"eval": {"holdout_clients": 0.0}, "protocol": {"name": "x", "eval_mode": "full", "ks": [5],
                                                                    "select_k": 5}}
    assert saved["eval"]["mode"] == "full"  # the input is left alone
    assert moved_overrides(["eval.mode=full", "+eval.ks=[5]", "rounds=2"]) == \
        ["protocol.eval_mode=full", "+protocol.ks=[5]", "rounds=2"]
    assert set(MOVED_KEYS.values()) <= {f"protocol.{name}" for name in PROTOCOL_FIELDS}


def test_every_protocol_field_and_the_hash_go_into_rounds_csv_and_summary_json(real_data_env, tmp_path):
    cfg = compose_run_config(["agg=fedavg", "rounds=1", "local_epochs=1", "progress=false", "protocol=strict",
                              "protocol.ks=[5,10]", "protocol.select_k=5"])
    summary = run(cfg, tmp_path)
    rounds = pd.read_csv(tmp_path / "rounds.csv")
    values = protocol_values(cfg.protocol)
    for name in PROTOCOL_FIELDS:
        assert summary["protocol"][name] == values[name]
        column = rounds[f"protocol_{name}"].astype(str).str.lower()
        assert (column == str(values[name]).lower()).all(), name
    assert summary["protocol"]["hash"] == protocol_hash(values)
    assert (rounds["protocol_hash"].astype(str) == protocol_hash(values)).all()
    assert recorded_values(summary) == values
    assert summary["select_metric"] == "hr@5" and "hr@5" in rounds


def _fedca(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(FEDCA), *args], cwd=cwd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "FEDCA_CACHE_DIR": str(cwd / "cache")})


def test_report_refuses_to_mix_a_protocol_with_a_changed_field_under_the_same_name(real_data_env, tmp_path):
    for name, extra in (("plain", []), ("average", ["protocol.ties=average"])):
        cfg = compose_run_config(["agg=fedavg", "rounds=1", "local_epochs=1", "progress=false", *extra])
        run(cfg, tmp_path / "runs" / name)

    complete, _ = collect([tmp_path / "runs"])
    assert complete["protocol"].nunique() == 1 and complete["protocol_hash"].nunique() == 2
    with pytest.raises(FedcaError, match=r"differ in ties;"):
        aggregate(complete, protocols=protocols_of(complete))

    refused = _fedca(tmp_path, "report", str(tmp_path / "runs"))
    lines = [line for line in refused.stderr.splitlines() if line.strip()]
    assert refused.returncode == 2 and len(lines) == 1 and "differ in ties" in lines[0], refused.stderr
    assert not (tmp_path / "runs" / "report").exists()

    mixed = _fedca(tmp_path, "report", str(tmp_path / "runs"), "--mix-protocols")
    assert mixed.returncode == 0, mixed.stderr
    assert "protocol_hash" in mixed.stdout.splitlines()[0]
    protocol_lines = [line for line in mixed.stdout.splitlines() if line.startswith("protocol fedca (")]
    assert len(protocol_lines) == 2 and any("ties=average" in line for line in protocol_lines)
    assert "## Protocols" in (tmp_path / "runs" / "report" / "results.md").read_text()


def test_a_single_protocol_table_hides_the_hash_column_and_prints_its_fields_once(real_data_env, tmp_path):
    for seed in (0, 1):
        run(compose_run_config(["agg=fedavg", "rounds=1", "local_epochs=1", "progress=false", f"seed={seed}"]),
            tmp_path / "runs" / str(seed))
    result = _fedca(tmp_path, "report", str(tmp_path / "runs"))
    assert result.returncode == 0, result.stderr
    assert "protocol_hash" not in result.stdout.splitlines()[0]
    assert len([line for line in result.stdout.splitlines() if line.startswith("protocol fedca (")]) == 1
    assert "protocol_hash" in pd.read_csv(tmp_path / "runs" / "report" / "results.csv").columns


def test_the_readme_protocol_table_lists_every_declared_field():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    table = readme.split("<!-- table:protocols -->")[1].split("<!-- /table:protocols -->")[0]
    listed = [line.split("`")[1] for line in table.splitlines()[2:] if line.startswith("| `")]
    assert listed == [name for name in PROTOCOL_FIELDS if name != "name"]
