"""Figures from run folders: convergence curves (mean ± std over seeds per round) and the
sensitivity of a metric to a swept numeric parameter.

matplotlib is an optional extra (``pip install 'fedca[plots]'``); it is imported only when a
figure is drawn, on the Agg canvas, so no display and no pyplot global state are involved.
"""

from pathlib import Path

import pandas as pd

from fedca.errors import FedcaError
from fedca.results.atomic import write_atomically
from fedca.results.columns import group_columns, require_group_column


def _figure(width: float = 6.4):
    """A new Agg-backed matplotlib Figure, or a FedcaError when matplotlib is missing."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise FedcaError("plots need matplotlib; install the plots extra: pip install 'fedca[plots]'") from exc
    figure = Figure(figsize=(width, 4.2), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _integer_ticks(axis) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _save(figure, out: Path) -> Path:
    """Write the figure as PNG atomically (temp file, fsync, rename over ``out``)."""
    return write_atomically(Path(out), lambda handle: figure.savefig(handle, format="png", dpi=150))


def _curve(run_dir: Path, metric: str, split: str) -> pd.Series:
    """``metric`` per round on ``split`` from one run's rounds.csv."""
    path = Path(run_dir) / "rounds.csv"
    try:
        rounds = pd.read_csv(path)
    except (OSError, ValueError) as exc:
        raise FedcaError(f"{path}: cannot read the per-round results ({exc})") from exc
    if metric not in rounds.columns:
        found = ", ".join(c for c in rounds.columns if "@" in c)
        raise FedcaError(f"{path}: no column {metric!r}; it has {found or 'no metric columns'}")
    rows = rounds[rounds["split"] == split].drop_duplicates("round", keep="last")
    return rows.set_index("round")[metric].astype(float).rename(str(run_dir))


def convergence_plot(run_dirs_by_label: dict[str, list[Path]], metric: str, split: str, out: Path) -> Path:
    """``metric`` (e.g. ``hr@10``) on ``split`` per round, one line per label: the mean over its
    runs (seeds) with a band of ± sample std. Returns ``out``."""
    if not run_dirs_by_label:
        raise FedcaError("no runs to plot")
    many = len(run_dirs_by_label) > 6
    figure = _figure(width=10.0 if many else 6.4)
    from matplotlib import colormaps

    axes = figure.add_subplot()
    colors = colormaps["tab20"].colors if many else colormaps["tab10"].colors
    for index, (label, run_dirs) in enumerate(run_dirs_by_label.items()):
        curves = pd.concat([_curve(run_dir, metric, split) for run_dir in run_dirs], axis=1).sort_index()
        mean, std = curves.mean(axis=1), curves.std(axis=1, ddof=1).fillna(0.0)
        (line,) = axes.plot(mean.index, mean.to_numpy(), label=f"{label} (n={len(run_dirs)})",
                            color=colors[index % len(colors)], linestyle=("-", "--")[index // len(colors) % 2])
        axes.fill_between(mean.index, (mean - std).to_numpy(), (mean + std).to_numpy(), color=line.get_color(),
                          alpha=0.2, linewidth=0)
    axes.set_title(f"{split} {metric} per round (mean ± std over seeds)")
    axes.set_xlabel("round")
    _integer_ticks(axes.xaxis)
    axes.set_ylabel(f"{split} {metric}")
    axes.grid(alpha=0.3)
    if many:
        axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    else:
        axes.legend(fontsize="small")
    return _save(figure, out)


def sensitivity_plot(grouped: pd.DataFrame, param: str, metric: str, out: Path) -> Path:
    """``metric`` (mean ± std error bars, from an ``aggregate`` table) against the swept numeric
    ``param``, one line per combination of the other group columns that differ. Rows without a
    numeric value of ``param`` (e.g. methods that lack it) are left out. Returns ``out``."""
    require_group_column(grouped, param)
    mean_column, std_column = f"{metric}_mean", f"{metric}_std"
    if mean_column not in grouped.columns:
        raise FedcaError(f"no metric {metric!r} in the grouped table")
    x = pd.to_numeric(grouped[param], errors="coerce")
    rows = grouped.assign(**{param: x})[x.notna()]
    if rows.empty:
        raise FedcaError(f"{param} has no numeric values to plot against")
    others = [c for c in group_columns(grouped) if c != param and rows[c].nunique(dropna=False) > 1]
    figure = _figure()
    axes = figure.add_subplot()
    for label, part in _lines(rows, others):
        part = part.sort_values(param)
        axes.errorbar(part[param], part[mean_column], yerr=part[std_column].fillna(0.0), marker="o", capsize=3,
                      label=label or metric)
    axes.set_title(f"{metric} vs {param} (mean ± std over seeds)")
    axes.set_xlabel(param)
    axes.set_ylabel(metric)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    return _save(figure, out)


def _lines(rows: pd.DataFrame, others: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """(label, rows) per combination of the columns in ``others``."""
    if not others:
        return [("", rows)]
    return [(", ".join(f"{c}={v}" for c, v in zip(others, key)), part)
            for key, part in rows.groupby(others, dropna=False, sort=False)]
