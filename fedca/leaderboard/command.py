"""``fedca leaderboard +leaderboard=NAME [KEY=VALUE ...]``: the whole pipeline, resumable."""

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from fedca.errors import FedcaError
from fedca.leaderboard.config import available, load
from fedca.leaderboard.ledger import Ledger
from fedca.leaderboard.pipeline import Lock, out_dir, plan, run_steps
from fedca.leaderboard.table import markdown, plot, tables, tuned_markdown
from fedca.results.atomic import write_text_if_changed

HELP = "tune every method on validation, rerun the best on seeds, tabulate with significance"
DESCRIPTION = ("For each dataset x method of a preset (conf/leaderboard/NAME.yaml): an Optuna search of the "
               "same number of trials on a tuning seed, selected on validation; the best configuration rerun "
               "on every seed under every protocol of the preset; then a table with mean ± std and paired "
               "tests against the baseline. Every step resumes where a kill left it and is skipped once done.")


def add_parser(subparsers) -> None:
    _arguments(subparsers.add_parser("leaderboard", help=HELP, description=DESCRIPTION))


def parse(argv: list) -> argparse.Namespace:
    """The leaderboard's arguments, options anywhere among the tokens."""
    parser = argparse.ArgumentParser(prog="fedca leaderboard", description=DESCRIPTION)
    _arguments(parser)
    return parser.parse_intermixed_args(argv)


def _arguments(board: argparse.ArgumentParser) -> None:
    board.add_argument("tokens", nargs="+", metavar="+leaderboard=NAME [KEY=VALUE ...]",
                       help=f"the preset ({', '.join(available())}) and overrides of its fields, e.g. trials=4 "
                            "'datasets=[ml100k]' rounds=20")
    board.add_argument("--plan", action="store_true", help="print what is left to run and stop")


def _split(tokens: list) -> tuple:
    """(preset name, overrides) of ``+leaderboard=NAME KEY=VALUE ...`` (or ``NAME KEY=VALUE ...``)."""
    first, rest = tokens[0], list(tokens[1:])
    key, equals, value = first.lstrip("+").partition("=")
    if equals and key == "leaderboard":
        return value, rest
    if not equals:
        return first, rest
    raise FedcaError("name the preset first: fedca leaderboard +leaderboard=NAME [KEY=VALUE ...]")


def preset_record(cfg) -> dict:
    """The preset as the ledger keeps it: everything but where and how fast it runs."""
    preset = {key: value for key, value in asdict(cfg).items() if key not in ("out", "ledger", "jobs", "threads")}
    return {**preset, "recorded": cfg.recorded()}


def write_tables(ledger: Ledger, say) -> Path:
    """The table step: significance.csv, leaderboard.md and leaderboard.png in the ledger; files
    whose content is unchanged are left untouched."""
    frames = tables(ledger)
    text = markdown(frames, ledger.preset) + "\n" + tuned_markdown(frames["tuned"])
    changed = [write_text_if_changed(ledger.folder / "significance.csv", frames["significance"].to_csv(index=False)),
               write_text_if_changed(ledger.folder / "leaderboard.md", text)]
    if any(changed) or not (ledger.folder / "leaderboard.png").is_file():
        if not plot(frames, ledger.preset, ledger.folder / "leaderboard.png"):
            say("plot skipped: nothing recorded yet, or matplotlib (the plots extra) missing")
    return ledger.folder / "leaderboard.md"


def command(args: argparse.Namespace) -> int:
    name, overrides = _split(args.tokens)
    cfg = load(name, overrides)
    started = time.monotonic()

    def say(line: str) -> None:
        print(f"[{time.monotonic() - started:7.0f} s] {line}", flush=True)

    with Lock(out_dir(cfg)):
        ledger = Ledger(Path(cfg.ledger), preset_record(cfg))
        left = plan(cfg, ledger)
        say(f"leaderboard {cfg.name} in {out_dir(cfg)}, ledger {cfg.ledger}: {left['cells']} cells, "
            f"{left['trials']} trials and {left['reruns']} reruns left")
        if args.plan:
            return 0
        errors = run_steps(cfg, ledger, say, cell_done=lambda: write_tables(ledger, say))
        say(f"table: {write_tables(ledger, say)}")
    for error in errors:
        print(f"error: {error}", file=sys.stderr)
    return 1 if errors else 0
