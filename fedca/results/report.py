"""Tables from run folders: one row per complete run, then mean ± std over seeds per group.

``collect`` reads every run folder (see ``run_folder.py``) below the given paths. A complete
run becomes one row: its descriptive columns (dataset, model, agg, seed, protocol and one
column per swept override key from ``.hydra/overrides.yaml``), the selected round and its
metrics, the best-test and final-round test metrics and the wall time. Runs that are not
complete go to a separate table and never into the numbers.

``aggregate`` groups the rows by every descriptive column except the seed and reports the
number of seeds and the mean and sample standard deviation (ddof=1) of every metric.
Numbers from different evaluation protocols do not compare, so mixing them needs consent:
runs are told apart by the hash of every protocol field (``fedca.config.protocol``), not by
the protocol's name, and a refusal names the fields that differ.
"""

import io
import json
import math
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

import pandas as pd
import yaml

from fedca.config.protocol import differing_fields, protocol_hash, recorded_values
from fedca.errors import FedcaError
from fedca.results.atomic import write_text
from fedca.results.columns import METRIC_PATTERN, group_columns, metric_columns, require_group_column
from fedca.results.run_folder import USER_METRICS
from fedca.results.significance import compare_to_baseline

GROUP_CHOICES = ("dataset", "model", "agg", "protocol")
PLAIN_COLUMNS = ("run_dir", "dataset", "model", "agg", "seed", "protocol", "protocol_hash")
METRIC_BLOCKS = (("val", "selected", "val"), ("test", "selected", "test"),
                 ("best_test", "best_test", "test"), ("final_test", "final", "test"),
                 ("unseen_test", "final", "unseen_test"))
RUN_MARKERS = ("config.yaml", "status.json", ".hydra")
EXECUTION_ONLY_KEYS = ("progress", "threads", "resume", "skip_done", "checkpoint_every", "device", "tracking")
INCOMPLETE_COLUMNS = ["run_dir", "status", "error"]


def find_runs(paths: Iterable[Path]) -> list[Path]:
    """Every run folder at or below each path (a folder with config.yaml, status.json or
    .hydra/), in natural order (job 2 before job 10), each once."""
    found, seen = [], set()
    for path in map(Path, paths):
        if not path.is_dir():
            raise FedcaError(f"{path}: no such folder; pass run folders or the folders that hold them")
        for run in sorted(_walk_runs(path), key=_natural_key):
            if run.resolve() not in seen:
                seen.add(run.resolve())
                found.append(run)
    return found


def _walk_runs(path: Path) -> list[Path]:
    """Run folders below ``path``, not entering hidden folders (.hydra holds a config.yaml too)."""
    runs = []
    for root, dirs, _ in os.walk(path):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        if _is_run(Path(root)):
            runs.append(Path(root))
    return runs


def _is_run(folder: Path) -> bool:
    return any((folder / marker).exists() for marker in RUN_MARKERS)


def _natural_key(path: Path) -> tuple:
    return tuple((0, int(part), "") if part.isdigit() else (1, 0, part)
                 for part in re.split(r"(\d+)", str(path)) if part)


def collect(paths: Iterable[Path]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(complete, incomplete) for the run folders below ``paths``; see the module docstring."""
    paths = list(map(Path, paths))
    folders = find_runs(paths)
    if not folders:
        raise FedcaError(f"no run folders (config.yaml, status.json or .hydra/) under {', '.join(map(str, paths))}")
    rows, incomplete = [], []
    for folder in folders:
        status = _read_json(folder / "status.json") or {}
        summary = _read_json(folder / "summary.json")
        if status.get("status") != "complete" or summary is None:
            incomplete.append({"run_dir": str(folder), "status": status.get("status", "missing"),
                               "error": status.get("error") or _missing_summary(status, summary)})
        else:
            rows.append(_Run(folder, summary))
    return _complete_frame(rows), pd.DataFrame(incomplete, columns=INCOMPLETE_COLUMNS)


def _missing_summary(status: dict, summary: dict | None) -> str | None:
    return "summary.json is missing or unreadable" if status.get("status") == "complete" and summary is None else None


def _read_json(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return value if isinstance(value, dict) else None


def _read_yaml(path: Path) -> object:
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return None


class _Run:
    """The files of one complete run folder, read once."""

    def __init__(self, folder: Path, summary: dict):
        self.folder = folder
        self.summary = summary
        config = _read_yaml(folder / "config.yaml")
        self.config = config if isinstance(config, dict) else {}
        hydra = _read_yaml(folder / ".hydra" / "hydra.yaml")
        choices = _lookup(hydra, "hydra.runtime.choices") if isinstance(hydra, dict) else None
        self.choices = choices if isinstance(choices, dict) else {}
        self.overrides = _parse_overrides(_read_yaml(folder / ".hydra" / "overrides.yaml"))

    def plain(self) -> dict:
        """run_dir, dataset, model, agg, seed and protocol; a group's choice (``agg=composite_sim_only``)
        wins over the name the config gives it, so ablations stay apart."""
        protocol = self.summary.get("protocol")
        names = {"dataset": self.summary.get("dataset"), "model": self.summary.get("model"),
                 "agg": self.summary.get("agg"),
                 "protocol": protocol.get("name") if isinstance(protocol, dict) else None}
        row = {"run_dir": str(self.folder)}
        for group in GROUP_CHOICES:
            row[group] = (self.overrides.get(group) or self.choices.get(group) or names[group]
                          or _lookup(self.config, f"{group}.name"))
        row["seed"] = self.summary.get("seed", self.config.get("seed"))
        values = self.protocol_values()
        row["protocol_hash"] = protocol_hash(values) if values else None
        return {column: row[column] for column in PLAIN_COLUMNS}

    def protocol_values(self) -> dict | None:
        """Every protocol field's value as the run recorded it (None for a run without a record)."""
        return recorded_values(self.summary)

    def swept(self, key: str) -> object:
        """The run's value of an override key, also where this run did not override it: the
        config's scalar at that path, else the override, else the config group's choice or name."""
        value = _lookup(self.config, key)
        if value is not None and _is_scalar(value):
            return value
        if key in self.overrides:
            return _parse_value(self.overrides[key])
        return self.choices.get(key) or _lookup(self.config, f"{key}.name")

    def metrics(self) -> dict:
        values = {"selected_round": (self.summary.get("selected") or {}).get("round")}
        for prefix, block, split in METRIC_BLOCKS:
            scores = (self.summary.get(block) or {}).get(split) or {}
            values.update({f"{prefix}_{name}": value for name, value in scores.items()})
        values["round_seconds"] = self.median_round_seconds()
        values["wall_seconds"] = self.summary.get("wall_seconds")
        return values

    def median_round_seconds(self) -> float | None:
        """Median wall time of one training round (train + aggregate + evaluate) from rounds.csv."""
        try:
            rounds = pd.read_csv(self.folder / "rounds.csv", usecols=["round", "seconds"])
        except (OSError, ValueError, pd.errors.ParserError):
            return None
        trained = rounds[rounds["round"] >= 1].drop_duplicates("round")["seconds"]
        return float(trained.median()) if len(trained) else None


def _parse_overrides(value: object) -> dict[str, str]:
    """``["agg=composite", "+x=1", "~y"]`` -> ``{"agg": "composite", "x": "1", "y": None}``,
    without Hydra's own keys and the execution-only keys (``EXECUTION_ONLY_KEYS``)."""
    overrides = {}
    for item in value if isinstance(value, list) else []:
        key, _, raw = str(item).partition("=")
        key = key.lstrip("+~")
        if key and not key.startswith("hydra.") and "/" not in key and key.split(".")[0] not in EXECUTION_ONLY_KEYS:
            overrides[key] = raw if "=" in str(item) else None
    return overrides


def _parse_value(raw: str | None) -> object:
    if raw is None:
        return None
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        return raw
    return value if _is_scalar(value) else raw


def _is_scalar(value: object) -> bool:
    return value is None or isinstance(value, (str, int, float, bool))


def _lookup(tree: object, dotted: str) -> object:
    """``tree["a"]["b"]`` for ``"a.b"``; None where the path does not exist."""
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _complete_frame(runs: list[_Run]) -> pd.DataFrame:
    if not runs:
        return pd.DataFrame(columns=[*PLAIN_COLUMNS, "selected_round", "round_seconds", "wall_seconds"])
    swept = list(dict.fromkeys(key for run in runs for key in run.overrides if key not in PLAIN_COLUMNS))
    frame = pd.DataFrame([{**run.plain(), **{key: run.swept(key) for key in swept}, **run.metrics()}
                          for run in runs])
    return frame[[*PLAIN_COLUMNS, *swept, "selected_round", *_ordered_metrics(frame.columns), "round_seconds",
                  "wall_seconds"]]


def _ordered_metrics(columns: Iterable[str]) -> list[str]:
    """val, test, best_test, final_test blocks; within a block by K, then hr, ndcg, others."""
    prefixes = [prefix for prefix, _, _ in METRIC_BLOCKS]
    rank = {"hr": 0, "ndcg": 1}

    def key(column: str) -> tuple:
        prefix, name, k = METRIC_PATTERN.match(column).groups()
        return prefixes.index(prefix), int(k), rank.get(name, 2), name

    return sorted((c for c in columns if METRIC_PATTERN.match(c)), key=key)







def protocols_of(complete: pd.DataFrame) -> dict[str, dict]:
    """{protocol hash: protocol values} of the runs of a per-run table, read from their summary.json."""
    found = {}
    for run_dir in complete["run_dir"]:
        values = recorded_values(_read_json(Path(run_dir) / "summary.json") or {})
        if values is not None:
            found.setdefault(protocol_hash(values), values)
    return dict(sorted(found.items()))


def check_one_protocol(complete: pd.DataFrame, protocols: dict[str, dict] | None = None) -> None:
    """FedcaError (one line) when the runs span several protocols: several hashes, or, for tables
    written before runs recorded one, several names. ``protocols`` ({hash: values}, see
    ``protocols_of``) lets the message name the fields that differ."""
    hashes = sorted(map(str, complete["protocol_hash"].dropna().unique())) if "protocol_hash" in complete else []
    names = sorted(map(str, complete["protocol"].dropna().unique()))
    if len(hashes) <= 1 and len(names) <= 1:
        return
    advice = "pass --mix-protocols to tabulate them side by side, or report each separately"
    if len(hashes) > 1 and protocols and all(h in protocols for h in hashes):
        first = protocols[hashes[0]]
        differing = list(dict.fromkeys(key for h in hashes[1:] for key in differing_fields(first, protocols[h])))
        labels = ", ".join(f"{protocols[h]['name']} {h}" for h in hashes)
        raise FedcaError(f"the runs span {len(hashes)} protocols ({labels}) that differ in {', '.join(differing)}; "
                         f"their numbers do not compare; {advice}")
    labels = ", ".join(hashes if len(hashes) > 1 else names)
    raise FedcaError(f"the runs span {max(len(hashes), len(names))} protocols ({labels}) whose numbers do not "
                     f"compare; {advice}")


def protocol_lines(protocols: dict[str, dict]) -> list[str]:
    """One line per protocol of a table: its name, hash and every field's value."""
    return [f"protocol {values['name']} ({digest}): "
            + ", ".join(f"{key}={value}" for key, value in values.items() if key != "name")
            for digest, values in protocols.items()]


def aggregate(complete: pd.DataFrame, mix_protocols: bool = False,
              protocols: dict[str, dict] | None = None) -> pd.DataFrame:
    """Mean and sample std (ddof=1) of every metric per group of seeds; n_seeds counts distinct
    seeds and n_runs the rows. Raises FedcaError when the rows span several protocols (see
    ``check_one_protocol``), unless ``mix_protocols`` (the protocol and its hash then stay group
    columns, so no row mixes two)."""
    if not mix_protocols:
        check_one_protocol(complete, protocols)
    keys = group_columns(complete)
    metrics = metric_columns(complete)
    numeric = complete.assign(**{m: pd.to_numeric(complete[m], errors="coerce") for m in metrics})
    groups = numeric.groupby(keys, dropna=False, sort=False)
    table = pd.DataFrame({"n_seeds": groups["seed"].nunique(), "n_runs": groups.size()})
    means, stds = groups[metrics].mean(), groups[metrics].std(ddof=1)
    for metric in metrics:
        table[f"{metric}_mean"] = means[metric]
        table[f"{metric}_std"] = stds[metric]
    return table.reset_index()


def _selected_metrics(table: pd.DataFrame, metrics: Sequence[str] | None) -> list[str]:
    available = [c[: -len("_mean")] for c in table.columns if c.endswith("_mean")]
    if metrics is None:
        return [m for m in available if m.startswith(("val_", "test_", "unseen_test_")) or m == "round_seconds"]
    unknown = [m for m in metrics if m not in available]
    if unknown:
        raise FedcaError(f"unknown metric {', '.join(unknown)}; the table has {', '.join(available)}")
    return list(metrics)


def _cells(table: pd.DataFrame, metrics: Sequence[str] | None, pm: str,
           note: tuple[str, Sequence[str]] | None = None) -> tuple[list[str], list[list[str]], int]:
    """Header, body rows and the number of left-aligned (group) columns of a grouped table;
    ``note`` (header, one cell per row) is appended as a last column."""
    chosen = _selected_metrics(table, metrics)
    groups = [g for g in group_columns(table) if g != "protocol_hash" or table[g].nunique() > 1]
    header = [*groups, "n_seeds", *chosen, *([note[0]] if note else [])]
    body = [[*(_label(row[g]) for g in groups), _label(row["n_seeds"]),
             *(_mean_std(row[f"{m}_mean"], row[f"{m}_std"], pm) for m in chosen), *([note[1][i]] if note else [])]
            for i, (_, row) in enumerate(table.iterrows())]
    return header, body, len(groups)


def _label(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _mean_std(mean: float, std: float, pm: str) -> str:
    if pd.isna(mean):
        return "-"
    return f"{mean:.4f}" if pd.isna(std) else f"{mean:.4f}{pm}{std:.4f}"


def to_markdown(table: pd.DataFrame, metrics: Sequence[str] | None = None,
                note: tuple[str, Sequence[str]] | None = None) -> str:
    """A GitHub markdown table of a grouped table: group columns, n_seeds, then "mean ± std"
    (4 decimals; the mean alone for a single seed). ``metrics`` defaults to the selected round's
    val and test metrics; ``note`` (header, one cell per row) adds a last column."""
    header, body, left = _cells(table, metrics, " ± ", note)
    align = ["---"] * left + ["---:"] * (len(header) - left)
    lines = [header, align, *body]
    return "\n".join("| " + " | ".join(cell.replace("|", "\\|") for cell in line) + " |" for line in lines) + "\n"


def to_latex(table: pd.DataFrame, metrics: Sequence[str] | None = None,
             note: tuple[str, Sequence[str]] | None = None) -> str:
    """A LaTeX ``tabular`` (booktabs rules) of a grouped table, laid out as ``to_markdown``; the
    ``note`` cells are LaTeX already."""
    header, body, left = _cells(table, metrics, " \\pm ", note)
    spec = "l" * left + "r" * (len(header) - left)
    last = len(header) - 1 if note else None
    math_cells = [[c if i == last else _latex_escape(c) if i < left + 1 or c == "-" else f"${c}$"
                   for i, c in enumerate(row)] for row in body]
    lines = [f"\\begin{{tabular}}{{{spec}}}", "\\toprule", " & ".join(map(_latex_escape, header)) + " \\\\",
             "\\midrule", *(" & ".join(row) + " \\\\" for row in math_cells), "\\bottomrule", "\\end{tabular}"]
    return "\n".join(lines) + "\n"


def _latex_escape(text: str) -> str:
    special = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
               "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
    return "".join(special.get(ch, ch) for ch in text)


def first_k(complete: pd.DataFrame) -> int:
    """The K of the first ``test_hr@K`` column (the smallest K reported)."""
    for column in complete.columns:
        match = METRIC_PATTERN.match(column)
        if match and match.group(1) == "test" and match.group(2) == "hr":
            return int(match.group(3))
    raise FedcaError("the runs report no test hr@K metric")


SIGNIFICANCE_LEGEND = ("vs baseline: mean paired difference over seeds [95% interval]; * paired t-test over "
                       "seeds p < 0.05; † Wilcoxon signed-rank test over users (per-user test metrics of the "
                       "selected round, averaged over seeds) p < 0.05")


def _baseline_spec(baseline: str) -> tuple[str, str]:
    """``KEY=VALUE`` or ``VALUE`` (an ``agg``) -> (key, value)."""
    key, _, value = baseline.partition("=")
    return (key, value) if value else ("agg", baseline)


def user_values(metric: str):
    """run_dir -> per-user values of ``metric`` (``test_hr@10`` reads column ``hr@10`` of the
    run's per_user_test.csv) as a Series by user, or None when the run has no such file."""
    column = metric[len("test_"):]

    def read(run_dir: str) -> pd.Series | None:
        try:
            frame = pd.read_csv(Path(run_dir) / USER_METRICS)
        except (OSError, ValueError, pd.errors.ParserError):
            return None
        return frame.set_index("user")[column] if column in frame else None

    return read


def baseline_comparison(complete: pd.DataFrame, baseline: str, metric: str) -> pd.DataFrame:
    """``compare_to_baseline`` of the per-run table: every group against ``baseline``
    (``KEY=VALUE`` or an ``agg``), with the per-user test from the runs' per_user_test.csv."""
    key, value = _baseline_spec(baseline)
    groups = group_columns(complete)
    require_group_column(complete, key)
    if not (complete[key].astype(str) == value).any():
        raise FedcaError(f"--baseline {baseline}: no run has {key}={value}")
    try:
        return compare_to_baseline(complete, key, value, metric, groups, per_user=user_values(metric))
    except ValueError as error:
        raise FedcaError(f"--baseline {baseline}: {error}") from None


def _significance_note(grouped: pd.DataFrame, comparison: pd.DataFrame, baseline: str, metric: str,
                       latex: bool) -> tuple[str, list[str]]:
    """The ``vs baseline`` column: one cell per grouped row (``baseline`` for the baseline's own
    rows, ``-`` for rows without a baseline of their context)."""
    key, value = _baseline_spec(baseline)
    groups = [c for c in comparison.columns if c in grouped.columns]
    by_group = {tuple(map(str, row[groups])): row for _, row in comparison.iterrows()}
    cells = []
    for _, row in grouped.iterrows():
        found = by_group.get(tuple(map(str, row[groups])))
        if str(row[key]) == value:
            cells.append("baseline")
        elif found is None:
            cells.append("-")
        else:
            interval = "" if pd.isna(found["low"]) else f" [{found['low']:+.4f}, {found['high']:+.4f}]"
            marks = ("*" if found["p_seeds"] < 0.05 else "") + ("†" if found["p_users"] < 0.05 else "")
            users = "" if pd.isna(found["p_users"]) else f", users p={found['p_users']:.2g}"
            cell = f"{found['difference']:+.4f}{interval} p={found['p_seeds']:.2g}{users}{marks}"
            cells.append(_latex_escape(cell).replace("†", r"$^\dagger$").replace("±", r"$\pm$") if latex else cell)
    return f"vs {baseline} (Δ {metric})", cells


def write_report(paths: Iterable[Path], out_dir: Path, mix_protocols: bool = False, plot: bool = False,
                 sensitivity_param: str | None = None, baseline: str | None = None) -> dict:
    """Write results.csv (per run), results_grouped.csv, results.md and results.tex into
    ``out_dir``, plus convergence_hr.png / convergence_ndcg.png with ``plot``,
    sensitivity_<param>.png with ``sensitivity_param``, and with ``baseline`` a ``vs baseline``
    column (paired tests of the selected round's test HR@K, see ``baseline_comparison``) and
    significance.csv. Returns {"table": markdown table, "complete": the per-run table,
    "incomplete": incomplete runs, "files": written paths, "protocols": {hash: protocol values}}."""
    paths = list(map(Path, paths))
    out_dir = Path(out_dir)
    complete, incomplete = collect(paths)
    if complete.empty:
        counts = incomplete["status"].value_counts()
        raise FedcaError(f"none of the {len(incomplete)} runs under {', '.join(map(str, paths))} is complete ("
                         + ", ".join(f"{n} {status}" for status, n in counts.items()) + ")")
    protocols = protocols_of(complete)
    grouped = aggregate(complete, mix_protocols=mix_protocols, protocols=protocols)
    if sensitivity_param:
        require_group_column(grouped, sensitivity_param)
    texts, notes = {}, (None, None)
    if baseline:
        metric = f"test_hr@{first_k(complete)}"
        comparison = baseline_comparison(complete, baseline, metric)
        notes = tuple(_significance_note(grouped, comparison, baseline, metric, latex) for latex in (False, True))
        texts["significance.csv"] = _csv(comparison)
    table = to_markdown(grouped, note=notes[0])
    texts = {"results.csv": _csv(complete), "results_grouped.csv": _csv(grouped),
             "results.md": _markdown_report(table, incomplete, protocol_lines(protocols),
                                            SIGNIFICANCE_LEGEND if baseline else None),
             "results.tex": to_latex(grouped, note=notes[1]), **texts}
    files = []
    for name, text in texts.items():
        write_text(out_dir / name, text)
        files.append(out_dir / name)
    if plot or sensitivity_param:
        files += _write_plots(complete, grouped, out_dir, plot, sensitivity_param)
    return {"table": table, "complete": complete, "incomplete": incomplete, "files": files, "protocols": protocols}


def best_trial(paths: Iterable[Path], complete: pd.DataFrame) -> dict | None:
    """The best complete run of an Optuna study among ``paths`` (a folder holding ``optuna.db``,
    see fedca/optuna_sweeper.py), by the study's objective: the selected round's val metric
    (``val_`` + the summary's ``select_metric``), the higher the better, the earlier trial among
    equals. Returns {"run_dir", "objective", "value", "overrides" (the trial's command-line
    overrides, which rerun it), "trials"} or None when no path is a study folder or no trial
    completed."""
    studies = [Path(path).resolve() for path in paths if (Path(path) / "optuna.db").is_file()]
    candidates = []
    for _, row in complete.iterrows():
        run_dir = Path(row["run_dir"]).resolve()
        if not any(study == run_dir or study in run_dir.parents for study in studies):
            continue
        objective = f"val_{(_read_json(run_dir / 'summary.json') or {}).get('select_metric', 'hr@10')}"
        if objective in row and not pd.isna(row[objective]):
            candidates.append({"run_dir": row["run_dir"], "objective": objective, "value": float(row[objective])})
    if not candidates:
        return None
    best = max(range(len(candidates)), key=lambda index: (candidates[index]["value"], -index))
    overrides = _read_yaml(Path(candidates[best]["run_dir"]) / ".hydra" / "overrides.yaml")
    return {**candidates[best], "trials": len(candidates),
            "overrides": [str(item) for item in overrides or [] if not str(item).lstrip("+~").startswith("hydra")]}


def _csv(frame: pd.DataFrame) -> str:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    return buffer.getvalue()


def _markdown_report(table: str, incomplete: pd.DataFrame, protocols: list[str], legend: str | None = None) -> str:
    text = ("# Results\n\nMean ± sample std (ddof=1) over seeds, at the round each run's protocol selects.\n\n"
            + table + (f"\n{legend}\n" if legend else "")
            + ("\n## Protocols\n\n" + "".join(f"- {line}\n" for line in protocols) if protocols else ""))
    if not incomplete.empty:
        text += "\n## Incomplete runs (not in the table)\n\n" + "".join(
            f"- `{row.run_dir}`: {row.status}" + (f" ({row.error})" if isinstance(row.error, str) else "") + "\n"
            for row in incomplete.itertuples())
    return text


def _write_plots(complete: pd.DataFrame, grouped: pd.DataFrame, out_dir: Path, plot: bool,
                 sensitivity_param: str | None) -> list[Path]:
    from fedca.results import plots

    k = first_k(complete)
    files = []
    if plot:
        by_label = run_dirs_by_label(complete)
        for name in ("hr", "ndcg"):
            files.append(plots.convergence_plot(by_label, f"{name}@{k}", "test", out_dir / f"convergence_{name}.png"))
    if sensitivity_param:
        safe = re.sub(r"[^\w.-]", "_", sensitivity_param)
        files.append(plots.sensitivity_plot(grouped, sensitivity_param, f"test_hr@{k}",
                                            out_dir / f"sensitivity_{safe}.png"))
    return files


def run_dirs_by_label(complete: pd.DataFrame) -> dict[str, list[Path]]:
    """Run folders per group, labelled by the group columns whose values differ across runs."""
    varying = [c for c in group_columns(complete) if complete[c].nunique(dropna=False) > 1]
    by_label: dict[str, list[Path]] = {}
    for _, row in complete.iterrows():
        parts = [f"{c}={_label(row[c])}" for c in varying if _label(row[c]) != "-"]
        by_label.setdefault(", ".join(parts) or "all runs", []).append(Path(row["run_dir"]))
    return by_label
