"""The installed `fedca` console script, run as a subprocess: every bad input is a one-line
`error:` on stderr with exit code 2 and no results written; help and `data stats` work."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

FEDCA = Path(sys.executable).parent / "fedca"
TINY_CSV = "1,1\n1,2\n1,3\n2,1\n2,2\n2,3\n"

# id: (files to write under the data folder, overrides with {data} for that folder, a fragment of the message)
BAD_INPUTS = {
    "missing_data_file": ({}, ["dataset.root={data}", "dataset.download=false"], "not found"),
    "download_offline": ({}, ["dataset.root={data}", "dataset.url=http://127.0.0.1:9/ml-100k.zip"],
                         "download it by hand and place ml-100k/u.data from the archive at"),
    "empty_file": ({"ml-100k/u.data": ""}, ["dataset.root={data}"], "empty"),
    "semicolon_file_read_as_ml100k": ({"ml-100k/u.data": "196;242;3;881250949\n"}, ["dataset.root={data}"],
                                      "line 1"),
    "non_numeric_timestamp": ({"ml-100k/u.data": "196\t242\t3\t881250949\n186\t302\t3\tabc\n"},
                              ["dataset.root={data}"], "line 2"),
    "user_with_two_interactions": ({"tiny.csv": "1,1\n1,2\n1,3\n2,1\n2,2\n"},
                                   ["dataset=csv", "dataset.root={data}", "dataset.file=tiny.csv",
                                    "protocol.min_interactions=0"], "user 2 has 2 interactions"),
    "more_eval_negatives_than_items": ({"tiny.csv": TINY_CSV},
                                       ["dataset=csv", "dataset.root={data}", "dataset.file=tiny.csv",
                                        "protocol.min_interactions=3"], "num_eval_negatives"),
    "unknown_dataset": ({}, ["dataset=nope"], "nope"),
    "unknown_model": ({}, ["model=nope"], "nope"),
    "unknown_agg": ({}, ["agg=nope"], "nope"),
    "unknown_method": ({}, ["+method=nope"], "nope"),
    "agg_clients_ratio_above_one": ({}, ["agg.agg_clients_ratio=1.5"], "agg.agg_clients_ratio"),
    "zero_clients_sample_ratio": ({}, ["clients_sample_ratio=0"], "clients_sample_ratio"),
    "negative_k": ({}, ["protocol.ks=[-1]"], "protocol.ks"),
    "moved_eval_mode": ({}, ["eval.mode=full"], "use protocol.eval_mode=full"),
    "unknown_key": ({}, ["foo=1"], "foo"),
    "non_integer_rounds": ({}, ["rounds=abc"], "rounds"),
}


def fedca(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(FEDCA), *args], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "FEDCA_CACHE_DIR": str(tmp_path / "cache"), **env})


@pytest.mark.parametrize("files, overrides, fragment", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_bad_input_is_one_error_line_with_exit_code_2_and_no_results(tmp_path, files, overrides, fragment):
    data = tmp_path / "data"
    data.mkdir()
    for name, text in files.items():
        (data / name).parent.mkdir(parents=True, exist_ok=True)
        (data / name).write_text(text)

    result = fedca(tmp_path, "run", *(o.format(data=data) for o in overrides), f"hydra.run.dir={tmp_path / 'run'}",
                   "progress=false")

    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert fragment in lines[0]
    assert "Traceback" not in result.stdout + result.stderr
    assert not [*tmp_path.rglob("rounds.csv"), *tmp_path.rglob("summary.json")]


@pytest.mark.parametrize("args, expected", [
    (["--help"], ["run", "data", "Examples"]),
    (["data", "--help"], ["list", "fetch", "stats"]),
    (["data", "stats", "--help"], ["name", "overrides"]),
    (["run", "--help"], ["Config groups", "dataset", "agg", "rounds"]),
], ids=["fedca", "data", "data_stats", "run"])
def test_help_exits_0_and_describes_the_command(tmp_path, args, expected):
    result = fedca(tmp_path, *args)

    assert result.returncode == 0, result.stderr
    assert all(word in result.stdout for word in expected), result.stdout


def test_data_stats_reports_ml100k_counts(tmp_path, data_dir):
    result = fedca(tmp_path, "data", "stats", "ml100k", FEDCA_DATA_DIR=str(data_dir))

    stats = dict(line.split(None, 1) for line in result.stdout.splitlines())
    assert result.returncode == 0, result.stderr
    assert (stats["users"], stats["items"], stats["interactions"]) == ("943", "1682", "100000")
