"""The mutation report (docs/mutation/report.json) and the README's score table agree, and the
report's counts add up from its per-mutant list (no silent gaps)."""

import importlib.util
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def driver():
    spec = importlib.util.spec_from_file_location("mutation_driver", ROOT / "scripts" / "mutation.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_readme_scores_are_the_reports():
    mutation = driver()
    report = json.loads((ROOT / "docs" / "mutation" / "report.json").read_text())
    readme = (ROOT / "README.md").read_text()
    block = readme.split(mutation.README_START)[1].split(mutation.README_END)[0].strip()
    assert block == mutation.readme_table(report)


def test_report_counts_add_up_and_equivalents_carry_reasons():
    report = json.loads((ROOT / "docs" / "mutation" / "report.json").read_text())
    assert report["modules"], "the report lists no module"
    for name, module in report["modules"].items():
        statuses = [m["status"] for m in module["details"]]
        killed = statuses.count("killed") + statuses.count("timeout")
        unchecked = statuses.count("not checked")
        equivalent = sum(1 for m in module["details"]
                         if m["status"] not in ("killed", "timeout", "not checked") and m["reason"])
        assert module["mutants"] == len(statuses), name
        assert (module["killed"] + module["timeout"], module["equivalent"]) == (killed, equivalent), name
        assert module["not_checked"] == unchecked, name
        assert module["survived"] == len(statuses) - killed - equivalent - unchecked, name
        relevant = len(statuses) - equivalent - unchecked
        assert abs(module["score"] - (killed / relevant if relevant else 1.0)) < 1e-4, name
