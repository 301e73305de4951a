"""The leaderboard's steps, each resumable and skipped once done.

For every dataset x method cell of a ``LeaderboardConfig`` (scratch folder ``out``, kept
record ``ledger``, see ``fedca.leaderboard.ledger``):

1. **search**: an Optuna study (``fedca run -m +tune=<entry.tune> hydra/sweeper=optuna``) of
   ``trials`` trials, every trial on ``tune_seed`` under the ``tune_protocol`` overrides, each
   trial's objective its selected round's validation HR@K (``fedca/optuna_sweeper.py``, which
   refuses test-set selection), the TPE sampler seeded with ``tune_seed`` (a study resumed
   after a kill draws its remaining trials from a restarted sampler). The study lives in ``<out>/tune/<dataset>/<method>/`` and
   resumes where a kill left it. Its best trial (its ``agg`` and ``model`` choices, the ``+method`` preset
   its tune preset is built on, if any, and the overrides the sampler chose) goes to the ledger's ``tuned.csv``; a cell found there is not
   searched again. Before recording it, the pipeline composes the rerun config of the tuning
   protocol on ``tune_seed`` and checks that it equals the best trial's ``config.yaml``, so a
   rerun is the tuned configuration and not a near miss.
2. **rerun**: the best configuration on every seed of ``seeds`` under every protocol, one
   ``fedca run -m ... seed=S1,S2,... resume=true skip_done=true`` per protocol into
   ``<out>/runs/<protocol>/<dataset>/<method>/`` (job ``n`` is the ``n``-th seed); once every
   seed is complete its rows and per-user metrics go to the ledger, and a protocol recorded
   there is not rerun. A study's trials may fail (a diverging trial is a failed Optuna trial); a
   cell goes on once all ``trials`` finished, as long as one of them completed. A run's checkpoint is deleted
   once the ledger holds what the pipeline needs from it (the study's best, or the cell's runs).
3. **table**: ``fedca.leaderboard.table`` renders the ledger, after every cell and at the end.

Every child process gets PR_SET_PDEATHSIG (SIGTERM), so a killed pipeline does not leave a
study running on its own; SIGTERM makes fedca finish its round and checkpoint. One pipeline at
a time holds ``<out>/.lock``.
"""

import ctypes
import fcntl
import json
import signal
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional

import pandas as pd
import yaml
from omegaconf import OmegaConf

from fedca.config.moved import moved_into_place
from fedca.config.compose import compose_run_config
from fedca.config.schema import RunConfig
from fedca.errors import FedcaError
from fedca.leaderboard.config import LeaderboardConfig
from fedca.leaderboard.ledger import PER_USER_METRIC, Ledger
from fedca.results.checkpoint import CHECKPOINT
from fedca.results.report import best_trial, collect, user_values
from fedca.results.run_folder import read_status
from fedca.run import RESUMABLE_DIFFERENCES

PR_SET_PDEATHSIG = 1
_COMPOSING = threading.Lock()  # Hydra's global state composes one config at a time


@dataclass(frozen=True)
class Cell:
    """One dataset x method of the leaderboard."""

    dataset: str
    method: str  # a row label of LeaderboardConfig.methods


def cells(cfg: LeaderboardConfig) -> List[Cell]:
    return [Cell(dataset, method) for dataset in cfg.datasets for method in cfg.methods]


def out_dir(cfg: LeaderboardConfig) -> Path:
    return Path(cfg.out)


def tune_dir(cfg: LeaderboardConfig, cell: Cell) -> Path:
    return out_dir(cfg) / "tune" / cell.dataset / cell.method


def runs_dir(cfg: LeaderboardConfig, protocol: str, cell: Cell) -> Path:
    return out_dir(cfg) / "runs" / protocol / cell.dataset / cell.method


def _shared(cfg: LeaderboardConfig, cell: Cell) -> List[str]:
    """Overrides every trial and rerun of ``cell`` has."""
    return [*cfg.common, *cfg.methods[cell.method].fixed, f"dataset={cell.dataset}", f"rounds={cfg.rounds}",
            "progress=false", f"threads={cfg.run_threads()}"]


def search_overrides(cfg: LeaderboardConfig, cell: Cell) -> List[str]:
    """The task overrides of every trial of ``cell`` (the sampler adds its own)."""
    return [f"+tune={cfg.methods[cell.method].tune}", *_shared(cfg, cell), f"seed={cfg.tune_seed}",
            *cfg.protocols[cfg.tune_protocol]]


def search_command(cfg: LeaderboardConfig, cell: Cell) -> List[str]:
    return ["run", "-m", *search_overrides(cfg, cell), "hydra/sweeper=optuna",
            f"hydra.sweeper.n_trials={cfg.trials}", f"hydra.sweeper.sampler.seed={cfg.tune_seed}",
            f"hydra.sweep.dir={tune_dir(cfg, cell)}"]


def rerun_overrides(cfg: LeaderboardConfig, cell: Cell, best: dict, protocol: str) -> List[str]:
    """The overrides of the reruns of ``cell`` under ``protocol``, without the seed."""
    return [f"agg={best['agg']}", f"model={best['model']}", *_shared(cfg, cell), *best["params"],
            *cfg.protocols[protocol]]


def rerun_command(cfg: LeaderboardConfig, cell: Cell, best: dict, protocol: str) -> List[str]:
    return ["run", "-m", *rerun_overrides(cfg, cell, best, protocol), f"seed={','.join(map(str, cfg.seeds))}",
            "resume=true", "skip_done=true", f"hydra.sweep.dir={runs_dir(cfg, protocol, cell)}"]


def _key(override: str) -> str:
    return override.lstrip("+~").partition("=")[0]


def best_of_study(cfg: LeaderboardConfig, cell: Cell) -> dict:
    """The study's best trial as {agg, model, params (the sampler's overrides), objective, value,
    trials, trial (its folder, relative to the study)}; FedcaError when no trial completed."""
    folder = tune_dir(cfg, cell)
    complete, _ = collect([folder])
    best = best_trial([folder], complete)
    if best is None:
        raise FedcaError(f"{cell.dataset}/{cell.method}: no trial of the study in {folder} completed")
    passed = {_key(override) for override in search_overrides(cfg, cell)}
    trial = Path(best["run_dir"])
    hydra = yaml.safe_load((trial / ".hydra" / "hydra.yaml").read_text())
    choices = hydra["hydra"]["runtime"]["choices"]
    preset = [f"+method={choices['method']}"] if choices.get("method") else []  # a tune preset built on one
    return {"agg": choices["agg"], "model": choices["model"],
            "params": [*preset, *(override for override in best["overrides"] if _key(override) not in passed)],
            "objective": best["objective"], "value": best["value"], "trials": best["trials"],
            "trial": str(trial.resolve().relative_to(folder.resolve()))}


def check_rerun_is_the_trial(cfg: LeaderboardConfig, cell: Cell, best: dict) -> None:
    """FedcaError unless the rerun config of the tuning protocol on ``tune_seed`` is the best
    trial's config (execution-only fields aside; keys that moved since the trial ran are read at
    their new place; a field added to fedca since then agrees while the rerun leaves it at its
    default, as the older code behaved)."""
    folder = tune_dir(cfg, cell)
    trial = moved_into_place(yaml.safe_load((folder / best["trial"] / "config.yaml").read_text()))
    with _COMPOSING:
        composed = compose_run_config([*rerun_overrides(cfg, cell, best, cfg.tune_protocol), f"seed={cfg.tune_seed}"])
    rerun = OmegaConf.to_container(OmegaConf.structured(composed))
    defaults = OmegaConf.to_container(OmegaConf.structured(RunConfig))
    added = {key for key in set(rerun) - set(trial) if rerun[key] == defaults.get(key)}  # newer fields, at their default
    differing = sorted(key for key in set(trial) | set(rerun) if key not in RESUMABLE_DIFFERENCES
                       and key not in added and trial.get(key) != rerun.get(key))
    if differing:
        raise FedcaError(f"{cell.dataset}/{cell.method}: the rerun config differs from the best trial's in "
                         f"{', '.join(differing)}; the preset's overrides do not reproduce the search")


def _die_with_parent() -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _fedca(arguments: List[str], log: Path) -> int:
    """Run ``python -m fedca ARGUMENTS`` with its output appended to ``log``; its exit code."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a", encoding="utf-8") as stream:
        stream.write(f"$ fedca {' '.join(arguments)}\n")
        stream.flush()
        return subprocess.run([sys.executable, "-m", "fedca", *arguments], stdout=stream, stderr=subprocess.STDOUT,
                              preexec_fn=_die_with_parent).returncode


def _drop_checkpoints(folders) -> None:
    """Delete the checkpoint of every complete run among ``folders``, once the ledger holds what
    the pipeline needs from it (a checkpoint is the whole population, about 0.2 GB on ML-100K:
    400 of them filled the disk); an incomplete run keeps its own to resume from."""
    for folder in folders:
        if _complete(folder):
            (Path(folder) / CHECKPOINT).unlink(missing_ok=True)


def _complete(folder: Path) -> bool:
    return read_status(folder) == "complete"


def study_trials(cfg: LeaderboardConfig, cell: Cell) -> tuple:
    """(finished, failed): how many trials of ``cell``'s study its Optuna storage records as
    finished (complete, pruned or failed, e.g. diverged to a NaN loss) and how many of those failed;
    (0, 0) before the study exists."""
    import optuna  # the optuna extra, which a leaderboard needs, imported only when one runs

    from fedca.optuna_sweeper import FINISHED

    storage = tune_dir(cfg, cell) / "optuna.db"
    if not storage.is_file():
        return 0, 0
    trials = optuna.load_study(study_name="fedca", storage=f"sqlite:///{storage}").trials
    return (sum(trial.state in FINISHED for trial in trials),
            sum(trial.state == optuna.trial.TrialState.FAIL for trial in trials))


def search(cfg: LeaderboardConfig, ledger: Ledger, cell: Cell, say: Callable[[str], None]) -> dict:
    """Step 1 for ``cell``: its tuned configuration, searching first when the ledger has none."""
    best = ledger.best(cell.dataset, cell.method)
    if best is not None:
        return best
    say(f"search {cell.dataset}/{cell.method}: {cfg.trials} trials")
    log = out_dir(cfg) / "logs" / f"search-{cell.dataset}-{cell.method}.log"
    code = _fedca(search_command(cfg, cell), log)
    finished, failed = study_trials(cfg, cell)
    if finished < cfg.trials:  # a study of finished trials exits 2 when some failed: those count as tried
        raise FedcaError(f"search {cell.dataset}/{cell.method} stopped with exit code {code} after {finished} of "
                         f"{cfg.trials} trials; see {log}")
    if failed:
        say(f"search {cell.dataset}/{cell.method}: {failed} of {finished} trials failed (see their status.json)")
    best = best_of_study(cfg, cell)
    check_rerun_is_the_trial(cfg, cell, best)
    ledger.record_best(cell.dataset, cell.method, best)
    _drop_checkpoints(tune_dir(cfg, cell).glob("[0-9]*"))
    return best


def _per_user_mean(folders: List[Path]) -> Optional[pd.Series]:
    """Each user's test HR@10 (the runs' per_user_test.csv) averaged over ``folders``; None when
    a run saved none."""
    read = user_values(f"test_{PER_USER_METRIC}")
    columns = [read(str(folder)) for folder in folders]
    if any(column is None for column in columns):
        return None
    return pd.concat(columns, axis=1, join="inner").mean(axis=1)


def rerun(cfg: LeaderboardConfig, ledger: Ledger, cell: Cell, best: dict, protocol: str,
          say: Callable[[str], None]) -> None:
    """Step 2 for ``cell`` under ``protocol``: every seed run and recorded in the ledger."""
    if ledger.has_runs(protocol, cell.dataset, cell.method):
        return
    folder = runs_dir(cfg, protocol, cell)
    jobs = [folder / str(job) for job in range(len(cfg.seeds))]
    if not all(_complete(job) for job in jobs):
        say(f"rerun {protocol}/{cell.dataset}/{cell.method}: seeds {','.join(map(str, cfg.seeds))}")
        log = out_dir(cfg) / "logs" / f"rerun-{protocol}-{cell.dataset}-{cell.method}.log"
        code = _fedca(rerun_command(cfg, cell, best, protocol), log)
        missing = [seed for job, seed in zip(jobs, cfg.seeds) if not _complete(job)]
        if code != 0 or missing:
            raise FedcaError(f"rerun {protocol}/{cell.dataset}/{cell.method}: seeds {missing} not complete "
                             f"(exit code {code}); see {log}")
    complete, _ = collect(jobs)
    if sorted(complete["seed"].astype(int)) != sorted(cfg.seeds):
        raise FedcaError(f"rerun {protocol}/{cell.dataset}/{cell.method}: the run folders in {folder} hold seeds "
                         f"{sorted(complete['seed'])}, not {sorted(cfg.seeds)}")
    ledger.record_runs(protocol, cell.dataset, cell.method, complete, _per_user_mean(jobs))
    _drop_checkpoints(jobs)


def work_cell(cfg: LeaderboardConfig, ledger: Ledger, cell: Cell, say: Callable[[str], None]) -> Optional[str]:
    """Steps 1 and 2 of one cell; the error line when a step failed, else None."""
    try:
        best = search(cfg, ledger, cell, say)
        for protocol in cfg.protocols:
            rerun(cfg, ledger, cell, best, protocol, say)
    except FedcaError as exc:
        return str(exc)
    return None


def plan(cfg: LeaderboardConfig, ledger: Ledger) -> Dict[str, int]:
    """What is left: trials to run (counting a study's finished trials) and reruns to run."""
    left = {"cells": len(cells(cfg)), "trials": 0, "reruns": 0}
    for cell in cells(cfg):
        if ledger.best(cell.dataset, cell.method) is None:
            done = sum(1 for job in tune_dir(cfg, cell).glob("[0-9]*") if _complete(job))
            left["trials"] += max(0, cfg.trials - done)
        for protocol in cfg.protocols:
            if not ledger.has_runs(protocol, cell.dataset, cell.method):
                left["reruns"] += sum(1 for job in range(len(cfg.seeds))
                                      if not _complete(runs_dir(cfg, protocol, cell) / str(job)))
    return left


class Lock:
    """``<out>/.lock`` held with flock for the pipeline's lifetime; FedcaError if another holds it."""

    def __init__(self, folder: Path):
        folder.mkdir(parents=True, exist_ok=True)
        self.stream = open(folder / ".lock", "w")
        try:
            fcntl.flock(self.stream, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.stream.close()
            raise FedcaError(f"another fedca leaderboard is working in {folder}") from None

    def __enter__(self):
        return self

    def __exit__(self, *_):
        self.stream.close()


def run_steps(cfg: LeaderboardConfig, ledger: Ledger, say: Callable[[str], None] = print,
              cell_done: Callable[[], None] = lambda: None) -> List[str]:
    """Steps 1 and 2 for every cell, ``cfg.jobs`` cells at a time, calling ``cell_done`` (one
    call at a time) after each cell; the error lines of the cells that failed (the others are
    done)."""
    finishing = threading.Lock()

    def work(cell: Cell) -> Optional[str]:
        error = work_cell(cfg, ledger, cell, say)
        with finishing:
            cell_done()
        return error

    with ThreadPoolExecutor(max_workers=cfg.jobs) as pool:
        results = list(pool.map(work, cells(cfg)))
    return [error for error in results if error is not None]
