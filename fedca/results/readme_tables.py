"""README tables rendered from committed results, so that their numbers cannot drift.

The protocol table is the ProtocolConfig declaration itself (fedca/config/schema.py). Each
other table's source is the per-run ``results.csv`` that ``fedca report`` wrote for its runs,
kept in ``docs/results/<name>/``. ``render`` groups it and formats it with the report's own
code (``aggregate`` and ``to_markdown``: mean ± sample std over seeds, the seed count in
``n_seeds``), so a table of partly finished runs says how many seeds each row holds. In
README.md each table stands between ``<!-- table:<name> -->`` and ``<!-- /table:<name> -->``;
``replace_tables`` rewrites those blocks and ``scripts/readme_tables.py`` applies it.
"""

import re
from dataclasses import dataclass, fields
from pathlib import Path

import pandas as pd

from fedca.config.fields import doc_of
from fedca.config.protocol import protocol_values
from fedca.config.schema import ProtocolConfig
from fedca.errors import FedcaError
from fedca.leaderboard.table import readme_table
from fedca.results.report import aggregate, to_markdown

RESULTS_DIR = Path("docs") / "results"
MARKER = re.compile(r"<!-- table:(?P<name>[\w/-]+) -->\n(?P<body>.*?)<!-- /table:(?P=name) -->", re.DOTALL)


@dataclass(frozen=True)
class TableSpec:
    """What one README table shows of its results.csv."""

    metrics: tuple = ()
    mix_protocols: bool = False  # the table sets protocols side by side (each row stays one protocol)
    leaderboard: bool = False  # docs/results/<name>/ is a leaderboard ledger (fedca.leaderboard.table)
    declaration: bool = False  # rendered from the ProtocolConfig declaration and conf/protocol/, not results


TABLES = {
    "fedca_vs_fedavg": TableSpec(metrics=("test_hr@10", "test_ndcg@10"), mix_protocols=True),
    "leaderboard/strict": TableSpec(leaderboard=True),
    "protocols": TableSpec(declaration=True),
    "stores_half": TableSpec(metrics=("test_hr@10", "test_ndcg@10", "final_test_hr@10")),
}


def results_path(repo: Path, name: str) -> Path:
    return Path(repo) / RESULTS_DIR / name / "results.csv"


def render(results_csv: Path, spec: TableSpec) -> str:
    """The markdown table of a ``fedca report`` results.csv, grouped as the report groups it."""
    try:
        runs = pd.read_csv(results_csv)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise FedcaError(f"{results_csv}: cannot read the results ({error})") from None
    return to_markdown(aggregate(runs, mix_protocols=spec.mix_protocols), metrics=list(spec.metrics))


def protocol_table() -> str:
    """Every ProtocolConfig field with its documentation and its value in each conf/protocol/ choice
    (composed as a run composes it); a field's row names whether it shapes the cached dataset."""
    from fedca.config.compose import available, compose_run_config

    names = available("protocol")
    chosen = {name: protocol_values(compose_run_config([f"protocol={name}"]).protocol) for name in names}
    lines = ["| field | " + " | ".join(f"`{name}`" for name in names) + " | what it decides |",
             "| --- | " + " | ".join("---" for _ in names) + " | --- |"]
    for item in fields(ProtocolConfig):
        if item.name == "name":
            continue
        cache = " (shapes the cached dataset)" if item.metadata.get("data", True) else ""
        lines.append(f"| `{item.name}` | " + " | ".join(f"`{_yaml_value(chosen[name][item.name])}`" for name in names)
                     + f" | {doc_of(item)}{cache} |")
    return "\n".join(lines) + "\n"


def _yaml_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    return str(value).replace(" ", "")


def render_all(repo: Path) -> dict:
    """{name: markdown table} for every table in TABLES, from the repository's docs/results (the
    protocol table from its declaration)."""
    return {name: protocol_table() if spec.declaration
            else readme_table(Path(repo) / RESULTS_DIR / name) if spec.leaderboard
            else render(results_path(repo, name), spec) for name, spec in TABLES.items()}


def marked_tables(readme: str) -> dict:
    """{name: text between the markers} of every marked table in ``readme``."""
    return {match["name"]: match["body"] for match in MARKER.finditer(readme)}


def replace_tables(readme: str, tables: dict) -> str:
    """``readme`` with the body of each marked table replaced by ``tables[name]``; every table
    must have its markers and every marked block a table."""
    marked = marked_tables(readme)
    if set(marked) != set(tables):
        missing, unknown = sorted(set(tables) - set(marked)), sorted(set(marked) - set(tables))
        raise FedcaError(f"README table markers do not match the tables: missing {missing}, unknown {unknown}")
    return MARKER.sub(lambda match: f"<!-- table:{match['name']} -->\n{tables[match['name']]}"
                                    f"<!-- /table:{match['name']} -->", readme)
