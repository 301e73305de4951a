"""scripts/parity.py: reading both codes' trajectories and the comparison table.

The reference's console lines are written here in the format its train.py logs; nothing of the
reference code is used.
"""

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "parity.py"


@pytest.fixture(scope="module")
def parity():
    spec = importlib.util.spec_from_file_location("parity_script", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["parity_script"] = module
    spec.loader.exec_module(module)
    return module


def write_reference_log(folder: Path, values: list) -> None:
    folder.mkdir(parents=True)
    lines = ["24-12-01 21:09-INFO-noise line with HR@10 = 0.9999 that is not a test round"]
    for number, (hr, ndcg) in enumerate(values, start=1):
        lines.append(f"2026-12-01 21:13:13 vm root[1] INFO [Epoch {number}/{len(values)}][Validation] "
                     f"HR@10 = 0.5555, NDCG@10 = 0.4444")
        lines.append(f"2026-12-01 21:13:21 vm root[1] INFO [Epoch {number}/{len(values)}][Test] "
                     f"HR@10 = {hr:.4f}, NDCG@10 = {ndcg:.4f}")
    (folder / "run.log").write_text("\n".join(lines) + "\n")


def write_rounds(folder: Path, values: list) -> None:
    folder.mkdir(parents=True)
    rows = ["round,split,hr@10,ndcg@10"]
    for number, value in enumerate(values, start=1):
        rows += [f"{number},val,0.5,0.5", f"{number},test,{value},{value / 2}"]
    (folder / "rounds.csv").write_text("\n".join(rows) + "\n")


def test_reference_log_gives_test_rounds_only(parity, tmp_path):
    write_reference_log(tmp_path / "run", [(0.105, 0.0447), (0.1347, 0.0606)])
    assert parity.reference_rounds(tmp_path / "run") == {1: (0.105, 0.0447), 2: (0.1347, 0.0606)}
    assert parity.reference_rounds(tmp_path / "missing") == {}


def test_python311_patch_turns_set_samples_into_tuple_samples_only(parity):
    source = ("a = x.apply(lambda x: random.sample(x, 99))\n"
              "b = x.apply(lambda x: random.sample(x, num_negatives))\n"
              "c = random.sample(range(n), k)\n")
    patched, count = parity.PY311_PATCH[0].subn(parity.PY311_PATCH[1], source)
    assert count == 2
    assert patched == ("a = x.apply(lambda x: random.sample(tuple(x), 99))\n"
                       "b = x.apply(lambda x: random.sample(tuple(x), num_negatives))\n"
                       "c = random.sample(range(n), k)\n")


def test_table_brackets_reference_by_fedca_spread(parity, tmp_path):
    work = tmp_path / "work"
    write_reference_log(work / "reference" / "ml100k-seed0", [(0.20, 0.1), (0.10, 0.05)])
    for seed, values in enumerate([[0.15, 0.30], [0.25, 0.20], [0.20, 0.25]]):
        write_rounds(work / "fedca" / f"ml100k-seed{seed}", values)
    args = type("Args", (), dict(datasets=["ml100k"], reference_seeds=[0], fedca_seeds=[0, 1, 2], rounds=3,
                                 work=work, from_reference_init=False))()
    rows = [line for line in parity.table(args).splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert rows[0] == "| 1 | 0.2000 | 0.2000 | 0.1500 | 0.2500 | yes |"
    assert rows[1] == "| 2 | 0.1000 | 0.2500 | 0.2000 | 0.3000 | no |"
    assert rows[2] == "| 3 |  |  |  |  |  |"
