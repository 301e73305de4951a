"""Mutation testing of the math that produces fedca's numbers (issue 13): a thin mutmut driver.

Usage (from the repository root, with the ``mutation`` extra installed)::

    .venv/bin/python scripts/mutation.py                  # every module, report in docs/mutation/
    .venv/bin/python scripts/mutation.py --modules merge,metrics
    .venv/bin/python scripts/mutation.py --ci             # composite, metrics, merge; exit 1 below 90 %

For each module of :data:`MODULES` the driver builds a scratch copy in ``build/mutation/<module>/``
(``fedca/``, ``tests/`` and a generated ``pyproject.toml`` whose ``[tool.mutmut]`` section mutates
only that one file and selects only the module's test files), runs ``mutmut run`` there, and reads
mutmut's per-mutant exit codes back. mutmut runs each mutant against the tests of the selection
that execute the mutated function (from its stats run), fastest first, with ``-x`` and a CPU-time
wall-clock and CPU-time limit per mutant (40 x the tests' clean duration + 200 s, see :func:`write_config`).
A pytest plugin (:data:`PLUGIN`) records the test that failed first, i.e. the killer.

Every mutant gets a stable description, ``Function: original line -> mutated line``, independent
of mutmut's numbering, so re-runs recognise the survivors written down in
``docs/mutation/equivalent.toml`` (``[[equivalent]]`` tables with ``module``, ``mutant`` and
``reason``). The score of a module is ``(killed + timeout) / (mutants - equivalent)``; a survivor
that is not in the equivalents file counts against it. The report (``report.md`` and
``report.json``) lists every survivor with its reason, and every mutant that survived the
baseline suite (``docs/mutation/baseline.json``: the survivors before the ``tests/test_math_*``
files were written) with the test that kills it now.

Tool choice: mutmut 3 rather than cosmic-ray. cosmic-ray rewrites the file in place and starts a
fresh test process per mutant, which here means importing torch (seconds) for each of ~3,000
mutants: far beyond the 60-minute budget on two cores. mutmut 3 generates every mutant of a
file at once behind trampolines (a function checks ``MUTANT_UNDER_TEST`` and calls the mutated
copy) and forks each mutant's test run from a warm fork server that has already imported torch
and collected the tests (``process_isolation = "forkserver"``, the mode meant for torch), so a
mutant costs only its tests. Limits that come with it: module-level code and decorated
functions are never mutated (so the numba kernels of ``federation/fused.py``, all ``@njit``,
are out of its reach; ``fused.py`` is left out and its kernel is checked against the
autograd engine by ``tests/test_fused_kernel.py``), and ``raise ...Error(...)`` lines are
excluded by pattern (their message strings are not math; the conditions that raise are mutated).
Threads are pinned to one (``OMP_NUM_THREADS=1``) so that forked workers never inherit a busy
OpenMP pool.
"""

from __future__ import annotations

import argparse
import ast
import difflib
import fcntl
import fnmatch
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = None

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs" / "mutation"
EQUIVALENTS = DOCS / "equivalent.toml"
BASELINE = DOCS / "baseline.json"
THRESHOLD = 0.90
CI_MODULES = ("composite", "metrics", "merge")


@dataclass(frozen=True)
class Module:
    """One source file under test and the fast test files that cover it."""

    path: str
    tests: tuple


MODULES = {
    "composite": Module("fedca/aggregators/composite.py", ("tests/test_math_composite.py",
                 "tests/test_math_agg_configs.py")),
    "metrics": Module("fedca/metrics/ranking.py", ("tests/test_metrics.py", "tests/test_math_metrics.py")),
    "merge": Module("fedca/federation/merge.py", ("tests/test_math_merge.py",)),
    "means": Module("fedca/metrics/means.py", ("tests/test_means.py",)),
    "simplex": Module("fedca/aggregators/simplex.py", ("tests/test_simplex.py",)),
    "subspace": Module("fedca/aggregators/subspace.py", ("tests/test_subspace.py", "tests/test_math_subspace.py")),
    "base": Module("fedca/aggregators/base.py", ("tests/test_math_base.py",
                 "tests/test_math_agg_configs.py")),
    "negatives": Module("fedca/data/negatives.py", ("tests/test_math_negatives.py",)),
    "split": Module("fedca/data/split.py", ("tests/test_math_split.py",)),
    "schedules": Module("fedca/schedules/*.py", ("tests/test_schedules.py", "tests/test_math_schedules.py")),
    "privacy": Module("fedca/federation/privacy.py", ("tests/test_math_privacy.py",)),
    "adam": Module("fedca/federation/adam.py", ("tests/test_math_adam.py",)),
    "pull": Module("fedca/federation/pull.py", ("tests/test_math_pull.py",)),
    "store": Module("fedca/federation/store.py", ("tests/test_math_store.py",)),
    "backbones": Module("fedca/models/backbones.py", ("tests/test_backbones.py", "tests/test_math_backbones.py")),
    "fedavg": Module("fedca/aggregators/fedavg.py", ("tests/test_math_baselines.py",)),
    "fedper": Module("fedca/aggregators/fedper.py", ("tests/test_math_baselines.py",
                 "tests/test_math_agg_configs.py")),
    "local": Module("fedca/aggregators/local.py", ("tests/test_math_baselines.py",)),
    "pfedrec": Module("fedca/aggregators/pfedrec.py", ("tests/test_math_baselines.py",)),
    "fedatt": Module("fedca/aggregators/fedatt.py", ("tests/test_math_baselines.py", "tests/test_math_fedatt.py",
                 "tests/test_math_agg_configs.py")),
    "clustering": Module("fedca/aggregators/clustering.py", ("tests/test_math_clustering.py",
                                                              "tests/test_clustering_baselines.py")),
    "fedfast": Module("fedca/aggregators/fedfast.py", ("tests/test_clustering_baselines.py",
                                                        "tests/test_math_fedfast.py",
                 "tests/test_math_agg_configs.py")),
    "perfedrec": Module("fedca/aggregators/perfedrec.py", ("tests/test_clustering_baselines.py",
                                                          "tests/test_math_perfedrec.py",
                 "tests/test_math_agg_configs.py")),
    "pfedgraph": Module("fedca/aggregators/pfedgraph.py", ("tests/test_graph_and_dual.py",
                                                            "tests/test_math_pfedgraph.py",
                 "tests/test_math_agg_configs.py")),
    "gpfedrec": Module("fedca/aggregators/gpfedrec.py", ("tests/test_math_gpfedrec.py",
                 "tests/test_math_agg_configs.py")),
}

# mutmut exit codes (mutmut.stats.status_by_exit_code) folded into the report's classes.
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 36: "timeout",
          24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", -9: "timeout", None: "not checked"}

PLUGIN = '''"""pytest plugin: append (mutant, first failing test) to MUTATION_KILLERS during mutmut's runs."""
import os


def pytest_runtest_logreport(report):
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    if report.failed and "__mutmut_" in mutant:
        with open(os.environ["MUTATION_KILLERS"], "a") as out:
            out.write(mutant + "\\t" + report.nodeid + "\\n")
'''


@dataclass
class Mutant:
    name: str  # mutmut's name, e.g. fedca.federation.merge.x_apply_downloads__mutmut_7
    function: str  # e.g. Composite.weight_matrix
    description: str  # stable key: "function: original -> mutated"
    status: str  # killed | survived | timeout | no tests | suspicious | not checked
    killer: str | None = None
    reason: str | None = None  # equivalence reason (survivors only)


@dataclass
class ModuleResult:
    name: str
    path: str
    tests: list
    mutants: list = field(default_factory=list)
    stale_equivalents: list = field(default_factory=list)

    def counts(self) -> dict:
        counts = {"mutants": len(self.mutants), "killed": 0, "timeout": 0, "survived": 0, "equivalent": 0,
                  "not_checked": 0}
        for mutant in self.mutants:
            if mutant.status in ("killed", "timeout"):
                counts[mutant.status] += 1
            elif mutant.status == "not checked":  # the run was stopped before this mutant
                counts["not_checked"] += 1
            elif mutant.reason is not None:
                counts["equivalent"] += 1
            else:
                counts["survived"] += 1
        return counts

    def score(self) -> float:
        """(killed + timeout) / (checked mutants - equivalent)."""
        counts = self.counts()
        relevant = counts["mutants"] - counts["equivalent"] - counts["not_checked"]
        return (counts["killed"] + counts["timeout"]) / relevant if relevant else 1.0


def function_name(mangled: str) -> str:
    """``x_apply_downloads`` -> ``apply_downloads``; ``xǁCompositeǁweight_matrix`` -> ``Composite.weight_matrix``."""
    if mangled.startswith("x_"):
        return mangled[2:]
    _, class_name, method = mangled.split("ǁ")
    return f"{class_name}.{method}"


def _functions(tree: ast.AST) -> dict:
    return {node.name: node for node in ast.walk(tree) if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _body_lines(node: ast.AST) -> list:
    """The function's parameters, then its statements, as ``ast.unparse`` writes them (no comments,
    one spelling), one per line."""
    return [f"def ({ast.unparse(node.args)})"] + "\n".join(ast.unparse(s) for s in node.body).splitlines()


def describe(mutated_source: str, names: list) -> dict:
    """Stable description of every mutant in ``names`` from the generated file ``mutated_source``."""
    functions = _functions(ast.parse(mutated_source))
    seen: dict = {}
    out = {}
    for name in names:
        short = name.rsplit(".", 1)[1]  # x_f__mutmut_3 or xǁCǁm__mutmut_3
        mangled = short.rsplit("__mutmut_", 1)[0]
        original = _body_lines(functions[mangled + "__mutmut_orig"])
        mutated = _body_lines(functions[short])
        removed, added = [], []
        for line in difflib.ndiff(original, mutated):
            if line.startswith("- "):
                removed.append(line[2:].strip())
            elif line.startswith("+ "):
                added.append(line[2:].strip())
        text = f"{function_name(mangled)}: {' / '.join(removed)} -> {' / '.join(added) or '(deleted)'}"
        seen[text] = seen.get(text, 0) + 1
        out[name] = text if seen[text] == 1 else f"{text} [{seen[text]}]"
    return out


def load_equivalents() -> dict:
    """{(module, description): reason} from docs/mutation/equivalent.toml."""
    if not EQUIVALENTS.exists():
        return {}
    if tomllib is None:
        raise SystemExit("scripts/mutation.py needs Python >= 3.11 (tomllib) to read equivalent.toml")
    data = tomllib.loads(EQUIVALENTS.read_text())
    return {(entry["module"], entry["mutant"].strip()): entry["reason"].strip() for entry in data.get("equivalent", [])}


def write_config(workdir: Path, paths: list, tests: list) -> None:
    """The scratch copy's pyproject.toml: mutate ``paths``, select ``tests``, generous limits."""
    lines = [
        "[tool.mutmut]",
        'source_paths = ["fedca"]',
        'also_copy = ["conf"]',  # the Hydra config tree, found beside the package
        f"only_mutate = {json.dumps(paths)}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        'pytest_add_cli_args = ["-q", "-p", "no:cacheprovider", "-p", "mutation_killers", "-W", "ignore"]',
        'do_not_mutate_patterns = ["raise \\\\w+(Error|Exception)\\\\("]',
        'process_isolation = "forkserver"',
        "use_git_change_detection = false",
        # Per mutant: wall limit multiplier * (clean duration of its tests + constant), CPU limit twice that.
        # Generous on purpose: the machine is shared, and a slow-but-correct run must not pass for a timeout.
        "timeout_multiplier = 40.0",
        "timeout_constant = 5.0",
    ]
    (workdir / "pyproject.toml").write_text("\n".join(lines) + "\n")


def prepare(workdir: Path, paths: list, tests: list, resume: bool) -> None:
    if workdir.exists() and not resume:
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", ".hypothesis", ".pytest_cache")
    for folder in ("fedca", "tests", "conf"):
        if (workdir / folder).exists():
            shutil.rmtree(workdir / folder)
        shutil.copytree(ROOT / folder, workdir / folder, ignore=ignore)
    (workdir / "plugin").mkdir(exist_ok=True)
    (workdir / "plugin" / "mutation_killers.py").write_text(PLUGIN)
    write_config(workdir, paths, tests)


def baseline_tests(module: Module) -> tuple:
    """The module's tests from before this mutation work: all but the ``tests/test_math_*`` files."""
    return tuple(test for test in module.tests if not test.startswith("tests/test_math_"))


def previous_survivors(workdir: Path) -> list:
    """mutmut names of the mutants in ``workdir`` that were not killed last time: survivors, timeouts
    (re-checked, since a loaded machine can make a correct run slow) and those never reached."""
    names = []
    for meta in (workdir / "mutants").rglob("*.py.meta"):
        names += [n for n, code in json.loads(meta.read_text())["exit_code_by_key"].items()
                  if STATUS.get(code, "suspicious") != "killed"]
    return sorted(names, key=_mutant_order)


def group_name(names: list) -> str:
    """The scratch folder of a set of modules (the same set always reuses the same folder)."""
    if set(names) == set(MODULES):
        return "all"
    return "ci" if set(names) == set(CI_MODULES) else "+".join(sorted(names))


def run_group(names: list, modules: dict, jobs: int, build: Path, resume: bool, survivors_only: bool) -> dict:
    """One mutmut run over the modules ``names``: each file's mutants run against the tests of the union
    of their test files that execute the mutated function. Returns the run's record (time, load)."""
    workdir = build / group_name(names)
    paths = [modules[name].path for name in names]
    tests = list(dict.fromkeys(test for name in names for test in modules[name].tests))
    rerun = previous_survivors(workdir) if survivors_only and (workdir / "mutants").exists() else None
    prepare(workdir, paths, tests, resume or rerun is not None)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", NUMBA_NUM_THREADS="1",
               MUTATION_KILLERS=str(workdir / "killers.tsv"),
               PYTHONPATH=os.pathsep.join([str(workdir / "plugin")] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
    mutmut = Path(sys.executable).with_name("mutmut")
    start, cpu_start = time.monotonic(), _children_cpu()
    code = 0
    if rerun != []:  # an empty list: every mutant was already killed
        with open(workdir / "mutmut.log", "w") as log:
            code = subprocess.call([str(mutmut), "run", "--max-children", str(jobs)] + (rerun or []), cwd=workdir,
                                   env=env, stdout=log, stderr=subprocess.STDOUT)
    if code != 0:
        tail = (workdir / "mutmut.log").read_text()[-3000:]
        raise SystemExit(f"mutation: mutmut failed for {', '.join(names)} (exit {code}); log tail:\n{tail}")
    return {"modules": names, "seconds": round(time.monotonic() - start, 1),
            "cpu_seconds": round(_children_cpu() - cpu_start, 1), "jobs": jobs, "survivors_only": rerun is not None,
            "load": " ".join(f"{x:.1f}" for x in os.getloadavg())}


def module_of(path: str, names: list) -> str | None:
    """The module of ``names`` whose path pattern matches the source file ``path`` (relative)."""
    return next((name for name in names if fnmatch.fnmatch(path, MODULES[name].path)), None)


def read_results(names: list, modules: dict, workdir: Path, equivalents: dict) -> dict:
    """{module: ModuleResult} with every mutant's status, killer and equivalence reason, from ``workdir``."""
    killers_file = workdir / "killers.tsv"
    killers = {}
    if killers_file.exists():
        for line in killers_file.read_text().splitlines():
            mutant, _, test = line.partition("\t")
            killers.setdefault(mutant, test)
    results = {name: ModuleResult(name=name, path=modules[name].path, tests=list(modules[name].tests))
               for name in names}
    for meta in sorted((workdir / "mutants").rglob("*.py.meta")):
        name = module_of(meta.with_suffix("").relative_to(workdir / "mutants").as_posix(), names)
        if name is None:
            continue
        exit_codes = json.loads(meta.read_text())["exit_code_by_key"]
        descriptions = describe(meta.with_suffix("").read_text(), sorted(exit_codes, key=_mutant_order))
        for mutant_name in sorted(exit_codes, key=_mutant_order):
            status = STATUS.get(exit_codes[mutant_name], "suspicious")
            description = descriptions[mutant_name]
            mutant = Mutant(name=mutant_name, function=description.split(":", 1)[0], description=description,
                            status=status, killer=killers.get(mutant_name) if status == "killed" else None)
            if status not in ("killed", "timeout"):
                mutant.reason = equivalents.get((name, description))
            results[name].mutants.append(mutant)
    for name, result in results.items():
        known = {m.description for m in result.mutants if m.status not in ("killed", "timeout")}
        result.stale_equivalents = sorted(d for (m, d) in equivalents if m == name and d not in known)
    return results


def _children_cpu() -> float:
    """User + system CPU seconds of every finished child process (and their waited-for children)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _mutant_order(mutant_name: str) -> tuple:
    stem, _, number = mutant_name.rpartition("__mutmut_")
    return stem, int(number)


def to_json(result: ModuleResult) -> dict:
    return {"path": result.path, "tests": result.tests, **result.counts(),
            "score": round(result.score(), 4),
            "details": [{"name": m.name, "description": m.description, "status": m.status, "killer": m.killer,
                         "reason": m.reason} for m in result.mutants],
            "stale_equivalents": result.stale_equivalents}


def markdown(report: dict, baseline: dict) -> str:
    """The Markdown report: per-module table, survivors with reasons, baseline survivors and killers."""
    out = ["# Mutation testing report", "",
           "Generated by `scripts/mutation.py` (mutmut " + report["mutmut"] + "); do not edit by hand.",
           f"Score = (killed + timeout) / (mutants - equivalent - not checked); target {THRESHOLD:.0%} per module. "
           "Not checked: the run was stopped before it reached these mutants.",
           "", "Runs (each one mutmut session over the listed modules):", ""]
    for run in report["runs"]:
        out.append(f"- {', '.join(run['modules'])}: {run['seconds'] / 60:.1f} min wall, {run['cpu_seconds'] / 60:.1f} "
                   f"CPU min, {run['jobs']} workers, load average at the end {run['load']}"
                   + (" (survivors re-tested)" if run["survivors_only"] else ""))
    out += ["", "On two otherwise idle cores the wall time is about half the CPU time.", "",
            "| module | file | mutants | killed | timeout | survived | equivalent | not checked | score |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for name, module in report["modules"].items():
        out.append(f"| {name} | `{module['path']}` | {module['mutants']} | {module['killed']} | {module['timeout']} | "
                   f"{module['survived']} | {module['equivalent']} | {module['not_checked']} | {shown_score(module)} |")
    for name, module in report["modules"].items():
        out += ["", f"## {name}", "", f"Tests: {', '.join('`' + t + '`' for t in module['tests'])}", ""]
        survivors = [m for m in module["details"] if m["status"] not in ("killed", "timeout", "not checked")]
        if survivors:
            out.append("Survivors (equivalent unless marked UNRESOLVED):")
            out.append("")
            for mutant in survivors:
                why = mutant["reason"] or f"UNRESOLVED ({mutant['status']})"
                out.append(f"- `{mutant['description']}` — {why}")
        else:
            out.append("No survivors.")
        by_file: dict = {}
        for mutant in module["details"]:
            if mutant["killer"]:
                test_file = mutant["killer"].split("::")[0]
                by_file[test_file] = by_file.get(test_file, 0) + 1
        if by_file:
            out += ["", "First failing test file of the killed mutants: "
                    + ", ".join(f"`{f}` {n}" for f, n in sorted(by_file.items())) + "."]
        before = set(baseline.get(name, []))
        now = {m["description"]: m for m in module["details"]}
        killed_since = [(d, now[d]) for d in sorted(before) if d in now and now[d]["status"] in ("killed", "timeout")]
        if killed_since:
            out += ["", "Survivors of the baseline suite killed by the new tests:", ""]
            for description, mutant in killed_since:
                out.append(f"- `{description}` — killed by `{mutant['killer'] or mutant['status']}`")
        if module["stale_equivalents"]:
            out += ["", "Equivalents file entries that no longer match a survivor:", ""]
            out += [f"- `{d}`" for d in module["stale_equivalents"]]
    return "\n".join(out) + "\n"


def write_report(report_dir: Path, results: dict, run: dict | None, record_baseline: bool) -> None:
    """Merge ``results`` into report.json (other modules keep their last results), record ``run``
    (a re-test of survivors is listed after the run it continues) and rewrite report.md."""

    report_dir.mkdir(parents=True, exist_ok=True)
    (ROOT / "build").mkdir(exist_ok=True)
    with open(ROOT / "build" / "mutation-report.lock", "w") as lock:  # groups may run side by side
        fcntl.flock(lock, fcntl.LOCK_EX)
        _merge_report(report_dir, results, run, record_baseline)


def _merge_report(report_dir: Path, results: dict, run: dict | None, record_baseline: bool) -> None:
    from importlib.metadata import version

    report_json = report_dir / "report.json"
    previous = json.loads(report_json.read_text()) if report_json.exists() else {"modules": {}, "runs": []}
    modules = {**previous["modules"], **{name: to_json(result) for name, result in results.items()}}
    modules = {name: modules[name] for name in MODULES if name in modules}
    runs = previous.get("runs", [])
    if run is not None:
        if not run["survivors_only"]:  # a full run replaces every earlier record of its modules
            runs = [r for r in runs if not set(r["modules"]) & set(run["modules"])]
        runs.append(run)
    report = {"mutmut": version("mutmut"), "threshold": THRESHOLD, "runs": runs, "modules": modules}
    report_json.write_text(json.dumps(report, indent=1) + "\n")
    baseline = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    if record_baseline:
        for name, result in results.items():
            baseline[name] = sorted(m.description for m in result.mutants
                                    if m.status not in ("killed", "timeout") and m.reason is None)
        BASELINE.write_text(json.dumps(baseline, indent=1) + "\n")
    (report_dir / "report.md").write_text(markdown(report, baseline))


README = ROOT / "README.md"
README_START, README_END = "<!-- mutation-scores:start -->", "<!-- mutation-scores:end -->"


def shown_score(module: dict) -> str:
    """The score as a percentage, or "not run" when the run never reached any of the module's mutants."""
    return "not run" if module["not_checked"] == module["mutants"] else f"{module['score']:.1%}"


def readme_table(report: dict) -> str:
    """The README's per-module score table, generated from report.json (tests/test_mutation_report.py
    checks that the README holds exactly this)."""
    lines = ["| module | file | mutants | killed + timeout | equivalent | survived | not checked | score |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, module in report["modules"].items():
        lines.append(f"| {name} | `{module['path']}` | {module['mutants']} | {module['killed'] + module['timeout']} | "
                     f"{module['equivalent']} | {module['survived']} | {module['not_checked']} | {shown_score(module)} |")
    return "\n".join(lines)


def update_readme(report: dict) -> None:
    text = README.read_text()
    head, _, rest = text.partition(README_START)
    _, _, tail = rest.partition(README_END)
    README.write_text(f"{head}{README_START}\n{readme_table(report)}\n{README_END}{tail}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--modules", help=f"comma-separated subset of: {', '.join(MODULES)}")
    parser.add_argument("--ci", action="store_true",
                        help=f"the fast subset ({', '.join(CI_MODULES)}); exit 1 when a score is below {THRESHOLD * 100:.0f}%%")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="mutants tested at once")
    parser.add_argument("--build", type=Path, default=ROOT / "build" / "mutation", help="scratch folder")
    parser.add_argument("--report-dir", type=Path, help="where report.md/.json go (default docs/mutation; "
                                                        "build/mutation with --ci)")
    parser.add_argument("--resume", action="store_true", help="keep mutmut's cached results in the scratch copies")
    parser.add_argument("--readme", action="store_true",
                        help="only rewrite README.md's score table from docs/mutation/report.json")
    parser.add_argument("--report-only", action="store_true",
                        help="re-read the scratch copies (e.g. after editing equivalent.toml) without running mutmut")
    parser.add_argument("--survivors", action="store_true",
                        help="re-test only the last run's survivors against the current tests (after adding tests)")
    parser.add_argument("--baseline", action="store_true",
                        help="record this run's unresolved survivors as docs/mutation/baseline.json")
    args = parser.parse_args(argv)
    if args.readme:
        update_readme(json.loads((DOCS / "report.json").read_text()))
        return 0
    names = list(CI_MODULES) if args.ci else (args.modules.split(",") if args.modules else list(MODULES))
    unknown = [n for n in names if n not in MODULES]
    if unknown:
        print(f"mutation: unknown module(s) {', '.join(unknown)}; choose from {', '.join(MODULES)}", file=sys.stderr)
        return 2
    modules_under_test = dict(MODULES)
    missing = sorted({t for n in names for t in MODULES[n].tests if not (ROOT / t).is_file()})
    if missing:
        print(f"mutation: test file(s) named in MODULES do not exist: {', '.join(missing)}", file=sys.stderr)
        return 2
    if args.baseline:
        modules_under_test = {n: Module(m.path, baseline_tests(m)) for n, m in MODULES.items()}
        names = [n for n in names if modules_under_test[n].tests]
        report_dir = args.report_dir or args.build / "baseline"
    if not args.baseline:
        report_dir = args.report_dir or (args.build if args.ci else DOCS)
    equivalents = load_equivalents()
    run = None
    if not args.report_only:
        run = run_group(names, modules_under_test, args.jobs, args.build, args.resume, args.survivors)
    results = read_results(names, modules_under_test, args.build / group_name(names), equivalents)
    results = {name: result for name, result in results.items() if result.mutants}
    for name, result in results.items():
        counts = result.counts()
        print(f"mutation: {name}: {result.score():.1%} ({counts['killed']} killed, {counts['timeout']} timeout, "
              f"{counts['survived']} survived, {counts['equivalent']} equivalent, {counts['not_checked']} not checked "
              f"of {counts['mutants']})")
    if run is not None:
        print(f"mutation: {run['seconds'] / 60:.1f} min wall, {run['cpu_seconds'] / 60:.1f} CPU min")
    write_report(report_dir, results, run, args.baseline)
    print(f"mutation: report in {report_dir / 'report.md'}")
    failing = [name for name, result in results.items() if result.score() < THRESHOLD]
    if failing:
        print(f"mutation: below {THRESHOLD:.0%}: {', '.join(failing)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
