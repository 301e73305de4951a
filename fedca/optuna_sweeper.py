"""``hydra/sweeper=optuna``: hydra-optuna-sweeper's sweeper, made to resume a killed study.

``register()`` (called by ``fedca run``) makes the plugin's ``OptunaSweeper`` build this
module's ``ResumableOptunaSweeperImpl`` (Hydra instantiates sweepers only from the
``hydra_plugins`` package, so the plugin's class stays the target and its implementation
class is swapped) and replaces the plugin's ``hydra/sweeper/optuna`` config with fedca's
defaults: ``direction: maximize``, the study ``fedca`` stored in
``sqlite:///${hydra.sweep.dir}/optuna.db`` (so rerunning the same command with the same
``hydra.sweep.dir`` continues it), ``n_jobs: 1`` trial at a time and ``max_failure_rate: 1.0``
(a failed trial, e.g. a NaN loss at a high learning rate, is recorded and the study goes on).
Every other key is the plugin's (``n_trials``, ``sampler``, ``params``, ...).

The released plugin (1.2 / 1.3) asks for ``n_trials`` new trials on every start, whatever the
storage already holds, and leaves the trials a kill interrupted in state RUNNING for ever.
This sweeper counts instead: a trial that finished (complete or failed) counts towards
``n_trials``; a trial left RUNNING by a killed study is run again in its own job folder with
``resume=true`` (fedca continues it from its last checkpoint) and then told to the study; only
the rest are asked anew. Trial ``n`` always runs in job folder ``n``. One process drives a
study at a time (a second one would take the first one's running trials for orphans).

The objective is what ``fedca run`` returns: the selected round's validation ``hr@K``
(``protocol.select_k``), maximised. Rounds must be selected on validation: with
``protocol.select_by=test`` the study is refused before any trial runs.
"""

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional

import optuna
from hydra.core.config_store import ConfigStore
from hydra.core.plugins import Plugins
from hydra_plugins.hydra_optuna_sweeper import _impl as plugin_impl
from hydra_plugins.hydra_optuna_sweeper._impl import OptunaSweeperImpl, create_params_from_overrides
from hydra_plugins.hydra_optuna_sweeper.config import Direction, OptunaSweeperConf
from omegaconf import OmegaConf

FINISHED = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.FAIL, optuna.trial.TrialState.PRUNED)


def _stop(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _objective(job_return) -> float | None:
    """The job's float return value, or None for a failed job (FedcaError, exception, no value)."""
    try:
        value = job_return.return_value
        return float(value) if value is not None else None
    except Exception:  # the job raised: JobReturn re-raises it here; the trial failed
        return None


class ResumableOptunaSweeperImpl(OptunaSweeperImpl):
    """OptunaSweeperImpl whose ``sweep`` resumes the study in its storage (module docstring)."""

    def sweep(self, arguments: List[str]) -> None:
        select_by = OmegaConf.select(self.config, "protocol.select_by")
        if select_by != "val":
            _stop(f"hydra/sweeper=optuna optimises the selected round's validation metric, so rounds must be "
                  f"selected on validation: set protocol.select_by=val (it is {select_by!r}); tuning on the "
                  f"test split would report an optimistic test number")
        if len(self._get_directions()) != 1:
            _stop("fedca's study has one objective (val hr@K): set hydra.sweeper.direction=maximize")
        self._process_searchspace_config()
        distributions, fixed = create_params_from_overrides([*self._parse_sweeper_params_config(), *arguments])
        distributions = {**(self.search_space_distributions or {}), **distributions}
        for name in fixed:
            distributions.pop(name, None)
        Path(self.sweep_dir).mkdir(parents=True, exist_ok=True)
        study = optuna.create_study(study_name=self.study_name, storage=self.storage, sampler=self.sampler,
                                    directions=self._get_directions(), load_if_exists=True)
        orphans = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.RUNNING]
        finished = sum(trial.state in FINISHED for trial in study.trials)
        resume = {} if any(name.lstrip("+~") == "resume" for name in fixed) else {"resume": "true"}
        for trial in orphans:
            overrides = tuple(f"{name}={value}" for name, value in {**trial.params, **fixed, **resume}.items())
            returns = self.launcher.launch([overrides], initial_job_idx=trial.number)
            self._tell(study, trial.number, returns)
        to_go = self.n_trials - finished - len(orphans)
        while to_go > 0:
            trials = [study.ask() for _ in range(min(to_go, self.n_jobs))]
            overrides = self._configure_trials(trials, distributions, fixed)
            self._tell(study, trials[0].number, self.launcher.launch(overrides, initial_job_idx=trials[0].number))
            to_go -= len(trials)
        self._write_results(study)

    def _tell(self, study: optuna.Study, first_number: int, returns) -> None:
        """Tell the study the objective of trials ``first_number``, ``first_number + 1``, ...;
        stop the sweep with one line when more than ``max_failure_rate`` of them failed."""
        failed = 0
        for number, job_return in enumerate(returns, start=first_number):
            value = _objective(job_return)
            if value is None:
                failed += 1
                study.tell(number, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(number, value)
        if returns and failed / len(returns) > self.max_failure_rate:
            _stop(f"{failed} of {len(returns)} trials failed (hydra.sweeper.max_failure_rate="
                  f"{self.max_failure_rate}); their status.json says why; rerun to continue the study")

    def _write_results(self, study: optuna.Study) -> None:
        """optimization_results.yaml in the sweep folder, as the plugin writes it."""
        completed = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
        if not completed:
            return
        best = study.best_trial
        OmegaConf.save(OmegaConf.create({"name": "optuna", "best_trial": best.number, "best_params": best.params,
                                         "best_value": best.value}),
                       Path(self.sweep_dir) / "optimization_results.yaml")


@dataclass
class FedcaOptunaSweeperConf(OptunaSweeperConf):
    """The plugin's config with fedca's sweeper and defaults (module docstring)."""

    direction: Any = Direction.maximize
    storage: Optional[Any] = "sqlite:///${hydra.sweep.dir}/optuna.db"
    study_name: Optional[str] = "fedca"
    n_jobs: int = 1
    max_failure_rate: float = 1.0


def register() -> None:
    """Make ``hydra/sweeper=optuna`` fedca's sweeper. Hydra's plugin scan runs first: it executes
    the plugin's config module, which stores the plugin's own config under that name."""
    Plugins.instance()
    plugin_impl.OptunaSweeperImpl = ResumableOptunaSweeperImpl  # what OptunaSweeper.__init__ imports
    ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=FedcaOptunaSweeperConf,
                                 provider="fedca")
