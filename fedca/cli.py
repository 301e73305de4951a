"""Command line: ``fedca run`` (a Hydra main), ``fedca data ...``.

Input errors print ``error: <one line>`` and exit with code 2, never a traceback.
"""

import argparse
import sys
from pathlib import Path

from fedca.errors import FedcaError

HYDRA_FLAGS = {"-m", "--multirun", "-h", "--help", "--hydra-help", "-c", "--cfg", "-i", "--info", "-p",
               "--package", "-sc", "--shell-completion", "-cp", "--config-path", "-cn", "--config-name",
               "-cd", "--config-dir", "--resolve", "--run"}


def job_threads(requested: int, launcher) -> int:
    """Threads for one job: ``threads`` when set, else the machine's cores shared among the
    launcher's parallel jobs (so two jobs on two cores do not oversubscribe them)."""
    import os

    if requested > 0:
        return requested
    cores = os.cpu_count() or 1
    parallel = launcher.get("n_jobs", 1) if launcher is not None else 1
    if parallel is None or parallel < 1:
        parallel = cores
    return max(1, cores // parallel)


def _check_study(argv: list, overrides: list) -> bool:
    """Whether ``argv`` asks for an Optuna study (``hydra/sweeper=optuna``); FedcaError when the
    study cannot run: no ``-m``, the optuna extra missing, or ``+tune=NAME`` without the sweeper."""
    import importlib.util

    study = "hydra/sweeper=optuna" in overrides
    if not study:
        if any(o.lstrip("+").startswith("tune=") for o in overrides):
            raise FedcaError("+tune=NAME is a search space for an Optuna study: add -m hydra/sweeper=optuna")
        return False
    if not {"-m", "--multirun"}.intersection(argv):
        raise FedcaError("hydra/sweeper=optuna runs a study of several trials: add -m")
    if importlib.util.find_spec("hydra_plugins.hydra_optuna_sweeper") is None:
        raise FedcaError("hydra/sweeper=optuna needs the optuna extra: pip install \"fedca[optuna]\"")
    return True


def _hydra_run(argv: list) -> int:
    import hydra
    import torch
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from fedca.config.compose import check_group_choices, compose_run_config, to_run_config
    from fedca.config.paths import conf_dir
    from fedca.config.schema import register_configs
    from fedca.federation import distributed
    from fedca.heap import keep_freed_blocks
    from fedca.results.atomic import write_json
    from fedca.run import RunInterrupted, run

    overrides = [a for a in argv if not a.startswith("-")]
    check_group_choices(overrides)
    if _check_study(argv, overrides):
        from fedca.optuna_sweeper import register as register_optuna_sweeper

        register_optuna_sweeper()
    if not HYDRA_FLAGS.intersection(argv):
        compose_run_config(overrides)
    if {"--help", "-h"}.intersection(argv):
        from fedca.config.help import run_help

        print(run_help(overrides))
        return 0
    register_configs()

    @hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
    def task(cfg):
        hydra_cfg = HydraConfig.get()
        out_dir = Path(hydra_cfg.runtime.output_dir)
        multirun = hydra_cfg.mode == RunMode.MULTIRUN
        try:
            run_cfg = to_run_config(cfg)
            distributed.start()  # under torchrun: join its process group (fedca/federation/distributed.py)
            keep_freed_blocks()
            torch.set_num_threads(job_threads(run_cfg.threads, hydra_cfg.launcher if multirun else None))
            tracker = None
            if run_cfg.tracking.name == "mlflow":
                from fedca.results.tracking import job_tracker

                name = f"{hydra_cfg.job.num} {hydra_cfg.job.override_dirname}" if multirun else out_dir.name
                tracker = job_tracker(run_cfg.tracking, out_dir, Path(hydra_cfg.sweep.dir) if multirun else None, name)
            summary = run(run_cfg, out_dir, tracker)
            return summary["selected"].get("val", {}).get(summary["select_metric"])  # hydra/sweeper=optuna's objective
        except RunInterrupted as exc:
            print(f"error: {exc}", file=sys.stderr)
            sys.exit(130)
        except FedcaError as exc:
            write_json(out_dir / "status.json", {"status": "failed", "error": str(exc)})
            prefix = f"job {hydra_cfg.job.num}: " if multirun else ""
            if distributed.requested() is None or distributed.requested().rank == 0:  # one line, not one per rank
                print(f"error: {prefix}{exc}", file=sys.stderr)
            if not multirun:
                sys.exit(exc.exit_code)
            return None

    sys.argv = ["fedca run", *argv]
    task()
    return 0


def _parser() -> argparse.ArgumentParser:
    from fedca import __version__, data_commands, report_command
    from fedca.leaderboard import command as leaderboard_command

    parser = argparse.ArgumentParser(
        prog="fedca", description="Experiment runner for personalized federated recommendation: "
                                  "FedCA composite aggregation and its baselines on batched clients.",
        epilog="Examples: fedca run dataset=ml100k agg=composite | fedca run -m agg=fedavg,composite seed=0,1,2 | "
               "fedca data stats filmtrust | fedca report outputs/multirun/DATE/TIME --plot. `fedca run --help` lists every config group and key.")
    parser.add_argument("--version", action="version", version=f"fedca {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="{run,data,report,leaderboard,reproduce,upgrade-checkpoint}")
    subparsers.add_parser("run", help="simulate federated rounds for a composed config (Hydra overrides)",
                          add_help=False)
    data_commands.add_parser(subparsers)
    report_command.add_parser(subparsers)
    leaderboard_command.add_parser(subparsers)
    subparsers.add_parser("reproduce", help="run the reduced benchmark preset and check it against recorded values",
                          add_help=False)
    upgrade = subparsers.add_parser(
        "upgrade-checkpoint", help="rewrite a checkpoint of an older fedca as plain data (weights-only loadable)",
        description="Older fedca versions pickled one Python class (the cold-start block) into checkpoint.pt and "
                    "selected.pt, which fedca now refuses to load. This rewrites such a file in place as plain "
                    "fields; it reads the file with only that class allowed, so no code in it runs.")
    upgrade.add_argument("paths", nargs="+", type=Path, help="checkpoint files (checkpoint.pt, selected.pt)")
    return parser


def _upgrade_checkpoints(paths: list) -> int:
    from fedca.results.checkpoint import upgrade_checkpoint

    for path in paths:
        print(f"{path}: {'upgraded' if upgrade_checkpoint(path) else 'already plain data, left as it is'}")
    return 0


def main(argv: list | None = None) -> int:
    """Entry point of the ``fedca`` console script."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        if argv and argv[0] == "run":
            return _hydra_run(argv[1:])
        if argv and argv[0] == "leaderboard":
            from fedca.leaderboard import command as leaderboard_command

            return leaderboard_command.command(leaderboard_command.parse(argv[1:]))
        if argv and argv[0] == "reproduce":
            from fedca.reproduce import main as reproduce

            return reproduce(argv[1:])
        parser = _parser()
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_help()
            return 2
        from fedca import data_commands, report_command

        if args.command == "report":
            return report_command.command(args)
        if args.command == "upgrade-checkpoint":
            return _upgrade_checkpoints(args.paths)
        return data_commands.command(args)
    except FedcaError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130


def entry() -> None:
    """Console-script wrapper: exit with main()'s code."""
    sys.exit(main())


if __name__ == "__main__":
    entry()
