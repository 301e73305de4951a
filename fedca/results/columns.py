"""The columns of fedca's per-run and grouped result tables: which are metrics (averaged over
seeds), which are counts, and which describe a group (dataset, method, swept keys)."""

import re

import pandas as pd

from fedca.errors import FedcaError

COUNT_COLUMNS = ("n_seeds", "n_runs")
METRIC_PATTERN = re.compile(r"^(val|test|best_test|final_test|unseen_test)_(\w+)@(\d+)$")


def metric_columns(frame: pd.DataFrame) -> list[str]:
    """The numeric result columns of a per-run table (everything averaged over seeds)."""
    return [c for c in frame.columns if c in ("selected_round", "round_seconds", "wall_seconds")
            or METRIC_PATTERN.match(c)]


def group_columns(table: pd.DataFrame) -> list[str]:
    """The descriptive columns of a per-run or grouped table, without run_dir and seed."""
    stats = set(metric_columns(table)) | set(COUNT_COLUMNS) | {"run_dir", "seed"}
    return [c for c in table.columns if c not in stats and not c.endswith(("_mean", "_std"))]


def require_group_column(table: pd.DataFrame, column: str) -> None:
    """FedcaError unless ``column`` is one of the table's descriptive (swept) columns."""
    groups = group_columns(table)
    if column not in groups:
        raise FedcaError(f"no swept parameter {column!r} in the runs; swept columns: {', '.join(groups)}")
