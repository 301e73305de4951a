"""``fedca report PATH...``: one table (and plots) from run and multirun folders."""

import argparse
from pathlib import Path

from fedca.results.report import best_trial, protocol_lines, write_report


def add_parser(subparsers) -> None:
    report = subparsers.add_parser(
        "report", help="collect run folders into results.csv, a mean ± std table and plots",
        description="Collect every run folder under PATH... into one table (one row per run), group it by "
                    "everything but the seed (mean ± std), write results.csv, results_grouped.csv, results.md "
                    "and results.tex, and print the table. Incomplete runs are listed, never mixed in.")
    report.add_argument("paths", nargs="+", type=Path, help="run folders or multirun folders")
    report.add_argument("--out", type=Path, help="where to write the report (default: PATH/report for the first PATH)")
    report.add_argument("--plot", action="store_true", help="also write convergence plots (PNG)")
    report.add_argument("--sensitivity", metavar="PARAM", help="also plot metrics against this swept key")
    report.add_argument("--mix-protocols", action="store_true", help="allow runs of different protocols in one table")
    report.add_argument("--baseline", metavar="[KEY=]VALUE",
                        help="add a column with each row's paired difference from this baseline (an agg, or "
                             "KEY=VALUE of a swept key) in the selected round's test HR@K: 95%% interval and "
                             "t-test over seeds, Wilcoxon test over users; writes significance.csv")


def command(args: argparse.Namespace) -> int:
    out = args.out or args.paths[0] / "report"
    result = write_report(args.paths, out, mix_protocols=args.mix_protocols, plot=args.plot or bool(args.sensitivity),
                          sensitivity_param=args.sensitivity, baseline=args.baseline)
    print(result["table"])
    for line in protocol_lines(result["protocols"]):
        print(line)
    for row in result["incomplete"].itertuples():
        print(f"incomplete: {row.run_dir} ({row.status}{': ' + str(row.error) if isinstance(row.error, str) else ''})")
    best = best_trial(args.paths, result["complete"])
    if best is not None:
        print(f"best trial (of {best['trials']} complete, by {best['objective']}): {best['run_dir']} "
              f"{best['objective']}={best['value']:.4f}: {' '.join(best['overrides'])}")
    print(f"wrote {', '.join(str(path) for path in result['files'])}")
    return 0
