"""README.md's result tables are exactly what the report code renders from docs/results."""

from pathlib import Path

import pytest

from fedca.errors import FedcaError
from fedca.results.readme_tables import TABLES, TableSpec, marked_tables, render, render_all, replace_tables
from fedca.results.report import aggregate, collect, to_markdown, write_report
from test_report import make_sweep

REPO = Path(__file__).resolve().parents[1]


def test_every_readme_table_equals_its_rendered_results():
    marked = marked_tables((REPO / "README.md").read_text(encoding="utf-8"))
    rendered = render_all(REPO)
    assert set(marked) == set(TABLES)
    for name, table in rendered.items():
        assert marked[name] == table, f"README table {name} differs; run python scripts/readme_tables.py"


def test_rendering_a_written_results_csv_gives_the_table_of_the_runs_themselves(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    write_report([sweep], tmp_path / "report")
    spec = TableSpec(metrics=("test_hr@10", "test_ndcg@10", "final_test_hr@10"))
    complete, _ = collect([sweep])
    direct = to_markdown(aggregate(complete), metrics=list(spec.metrics))
    assert render(tmp_path / "report" / "results.csv", spec) == direct
    assert "| ml100k | fcf | composite | fedca | 3 | 0.5300 ± 0.0300 |" in direct


def test_replace_tables_rewrites_only_the_marked_blocks():
    readme = "intro\n<!-- table:a -->\nold a\n<!-- /table:a -->\nmiddle\n<!-- table:b -->\n<!-- /table:b -->\nend\n"
    updated = replace_tables(readme, {"a": "| new a |\n", "b": "| new b |\n"})
    assert updated == ("intro\n<!-- table:a -->\n| new a |\n<!-- /table:a -->\nmiddle\n"
                       "<!-- table:b -->\n| new b |\n<!-- /table:b -->\nend\n")
    assert replace_tables(updated, {"a": "| new a |\n", "b": "| new b |\n"}) == updated


def test_a_table_without_markers_or_markers_without_a_table_is_an_error():
    with pytest.raises(FedcaError, match=r"missing \['b'\], unknown \[\]"):
        replace_tables("<!-- table:a -->\n<!-- /table:a -->\n", {"a": "", "b": ""})
    with pytest.raises(FedcaError, match=r"missing \[\], unknown \['c'\]"):
        replace_tables("<!-- table:c -->\n<!-- /table:c -->\n", {})
