"""The leaderboard's tables, significance and plot, from its ledger alone.

``tables`` reads a ``Ledger`` and returns

* ``results``: the recorded reruns (one row per run: ``column``, ``dataset``, ``method``,
  ``seed`` and the report's metrics);
* ``significance``: every method against the baseline in each protocol x dataset, on the
  selected round's test HR@10: the paired t-test over seeds and the per-user Wilcoxon test
  (``fedca.results.significance.compare_to_baseline``);
* ``tuned``: each cell's tuned configuration.

``markdown`` renders them (mean ± sample std over seeds; ``*`` p < 0.05 over seeds, ``†``
p < 0.05 over users, after ``↑`` or ``↓``: above or below the baseline's mean). Everything comes from the committed ledger, so the README tables are
rebuilt without the run folders.
"""

import math
from pathlib import Path
from typing import Dict, List

import pandas as pd

from fedca.leaderboard.ledger import Ledger
from fedca.results.significance import compare_to_baseline

METRICS = ("test_hr@10", "test_ndcg@10")
GROUP = ["column", "dataset", "method"]
SIGNIFICANCE_COLUMNS = [*GROUP, "n", "difference", "low", "high", "p_seeds", "users", "p_users"]
LEGEND = ("Mean ± sample std over seeds of the selected round's test metric (rounds selected on validation, "
          "except where the protocol selects on test). Against the baseline: ↑ / ↓ above / below it, marked "
          "only when significant: * the paired t-test over seeds gives p < 0.05, † the per-user Wilcoxon "
          "signed-rank test (per-user metrics averaged over seeds) gives p < 0.05. (n=...) marks rows with "
          "fewer seeds than the preset; - not run yet.")


def tables(ledger: Ledger) -> Dict[str, pd.DataFrame]:
    """{results, significance, tuned} of ``ledger`` (module docstring)."""
    results = ledger.results()
    significance = pd.DataFrame(columns=SIGNIFICANCE_COLUMNS)
    if not results.empty:
        keyed = results.assign(run_dir=[f"{r.column}/{r.dataset}/{r.method}/{r.seed}"
                                        for r in results.itertuples(index=False)])
        significance = compare_to_baseline(keyed, "method", ledger.preset["baseline"], METRICS[0], GROUP,
                                           per_user=ledger.per_user_reader())
    return {"results": results, "significance": significance, "tuned": ledger.tuned()}


def _cell(values: pd.Series, seeds: int, marks: str) -> str:
    if values.empty:
        return "-"
    std = values.std(ddof=1) if len(values) > 1 else math.nan
    text = f"{values.mean():.4f}" + ("" if math.isnan(std) else f" ± {std:.4f}") + marks
    return text + (f" (n={len(values)})" if len(values) < seeds else "")


def _marks(significance: pd.DataFrame, column: str, dataset: str, method: str) -> str:
    row = significance[(significance["column"] == column) & (significance["dataset"] == dataset)
                       & (significance["method"] == method)]
    if row.empty:
        return ""
    row = row.iloc[0]
    marks = ("*" if row["p_seeds"] < 0.05 else "") + ("†" if row["p_users"] < 0.05 else "")
    return (" ↑" if row["difference"] > 0 else " ↓") + marks if marks else ""


def markdown(frames: Dict[str, pd.DataFrame], preset: dict) -> str:
    """One table per protocol (rows: methods; columns: dataset x metric), the legend, then the
    tuned configurations."""
    results, significance = frames["results"], frames["significance"]
    if results.empty:
        results = pd.DataFrame(columns=[*GROUP, *METRICS])
    seeds = len(preset["seeds"])
    parts: List[str] = []
    for column, overrides in preset["protocols"].items():
        parts.append(f"**{column}** (`{' '.join(overrides)}`), vs `{preset['baseline']}`\n")
        header = ["method"] + [f"{d} {m.split('_')[1].upper()}" for d in preset["datasets"] for m in METRICS]
        lines = ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)]
        for method in preset["methods"]:
            cells = [method]
            for dataset in preset["datasets"]:
                rows = results[(results["column"] == column) & (results["dataset"] == dataset)
                               & (results["method"] == method)]
                for metric in METRICS:
                    marks = _marks(significance, column, dataset, method) if metric == METRICS[0] else ""
                    cells.append(_cell(rows[metric].dropna() if metric in rows else pd.Series(dtype=float),
                                       seeds, marks))
            lines.append("| " + " | ".join(cells) + " |")
        parts.append("\n".join(lines) + "\n")
    parts.append(LEGEND + "\n")
    return "\n".join(parts)


def tuned_markdown(tuned: pd.DataFrame) -> str:
    """The tuned configuration of each cell: its overrides and the best trial's validation metric."""
    lines = ["| dataset | method | agg / model | tuned overrides | best val HR@10 (trials) |",
             "| --- | --- | --- | --- | ---: |"]
    for row in tuned.itertuples(index=False):
        params = " ".join(f"`{p}`" for p in str(row.params).split()) if isinstance(row.params, str) else "-"
        lines.append(f"| {row.dataset} | {row.method} | {row.agg} / {row.model} | {params} | "
                     f"{row.value:.4f} ({row.trials}) |")
    return "\n".join(lines) + "\n"


def plot(frames: Dict[str, pd.DataFrame], preset: dict, path: Path) -> bool:
    """Bars of mean test HR@10 ± std per method, one panel per protocol x dataset; False (and
    nothing written) when matplotlib is not installed or nothing is recorded yet."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    results = frames["results"]
    if results.empty:
        return False
    protocols, datasets, methods = list(preset["protocols"]), list(preset["datasets"]), list(preset["methods"])
    figure, axes = plt.subplots(len(protocols), len(datasets), squeeze=False, sharex=True,
                                figsize=(3.2 * len(datasets), 0.32 * len(methods) * len(protocols) + 1.2))
    for i, column in enumerate(protocols):
        for j, dataset in enumerate(datasets):
            axis = axes[i][j]
            rows = results[(results["column"] == column) & (results["dataset"] == dataset)]
            means = [rows.loc[rows["method"] == m, METRICS[0]].mean() for m in methods]
            stds = [rows.loc[rows["method"] == m, METRICS[0]].std(ddof=1) for m in methods]
            colors = ["tab:orange" if m == preset["baseline"] else "tab:blue" for m in methods]
            axis.barh(range(len(methods)), [0 if math.isnan(v) else v for v in means],
                      xerr=[0 if math.isnan(v) else v for v in stds], color=colors)
            axis.set_yticks(range(len(methods)), methods if j == 0 else [""] * len(methods), fontsize=7)
            axis.invert_yaxis()
            axis.set_title(f"{dataset} · {column}", fontsize=8)
            axis.set_xlim(0, 1)
            if i == len(protocols) - 1:
                axis.set_xlabel("test HR@10", fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return True


def readme_table(folder: Path) -> str:
    """The README's leaderboard: the tables and tuned configurations of the ledger in ``folder``."""
    ledger = Ledger.read(folder)
    frames = tables(ledger)
    return markdown(frames, ledger.preset) + "\n" + tuned_markdown(frames["tuned"])
