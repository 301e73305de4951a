"""Optuna studies through ``fedca run -m hydra/sweeper=optuna``: the presets, the objective,
the refusal to tune on test, resume after SIGKILL and the best trial in ``fedca report``."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

from fedca.config.compose import compose_run_config
from fedca.config.paths import conf_dir

FEDCA = Path(sys.executable).with_name("fedca")
PRESETS = sorted(path.stem for path in (conf_dir() / "tune").glob("*.yaml"))
STUDY = ["run", "-m", "hydra/sweeper=optuna", "+tune=composite", "hydra.sweeper.n_trials=4", "rounds=2",
         "local_epochs=1", "clients_sample_ratio=0.25", "progress=false", "threads=1"]


def _fedca(*args, timeout=900):
    return subprocess.run([str(FEDCA), *args], capture_output=True, text=True, timeout=timeout)


def test_there_is_a_preset_for_every_method():
    methods = sorted(path.stem for path in (conf_dir() / "method").glob("*.yaml"))
    assert PRESETS == methods


@pytest.mark.parametrize("preset", PRESETS)
def test_each_preset_searches_keys_of_its_method_and_selects_on_validation(preset):
    space = yaml.safe_load((conf_dir() / "tune" / f"{preset}.yaml").read_text())["hydra"]["sweeper"]["params"]
    composed = OmegaConf.structured(compose_run_config([f"+tune={preset}"]))
    method = OmegaConf.structured(compose_run_config([f"+method={preset}"]))
    assert composed.agg.name == method.agg.name and composed.model.name == method.model.name
    assert composed.protocol.select_by == "val"
    assert space, "a preset without a search space tunes nothing"
    for key in space:
        assert OmegaConf.select(composed, key) is not None, f"{preset}: {key} is not a key of the composed config"


def test_tuning_on_the_test_split_is_refused_before_any_trial(tmp_path):
    done = _fedca(*STUDY, "protocol.select_by=test", f"hydra.sweep.dir={tmp_path / 'study'}")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "protocol.select_by=val" in lines[0], done.stderr
    assert not (tmp_path / "study").exists()


@pytest.mark.parametrize("argv, fragment", [
    (["run", "+tune=composite"], "add -m hydra/sweeper=optuna"),
    (["run", "hydra/sweeper=optuna", "+tune=composite"], "add -m"),
    (["run", "-m", "hydra/sweeper=optuna", "+tune=nothing"], "unknown tune 'nothing'"),
])
def test_a_study_that_cannot_run_fails_with_one_line(argv, fragment):
    done = _fedca(*argv)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and fragment in done.stderr, done.stderr


def _wait_for_job(sweep: Path, job: int, process, limit=600.0) -> None:
    """Until job folder ``job`` exists (so the trials before it were told to the study)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        assert process.poll() is None, "the study ended before it could be killed"
        if (sweep / str(job) / ".hydra").is_dir():
            return
        time.sleep(0.05)
    raise AssertionError(f"job {job} never started")


def _status(folder: Path) -> str:
    return json.loads((folder / "status.json").read_text())["status"]


@pytest.mark.slow
def test_a_killed_study_resumes_to_n_trials_and_report_names_the_best(real_data_env, tmp_path):
    import optuna

    sweep = tmp_path / "study"
    process = subprocess.Popen([str(FEDCA), *STUDY, f"hydra.sweep.dir={sweep}"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    _wait_for_job(sweep, 1, process)
    process.send_signal(signal.SIGKILL)
    process.wait()
    killed = optuna.load_study(study_name="fedca", storage=f"sqlite:///{sweep / 'optuna.db'}")
    states = [trial.state for trial in killed.trials]
    assert states == [optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.RUNNING]

    done = _fedca(*STUDY, f"hydra.sweep.dir={sweep}")
    assert done.returncode == 0, done.stderr
    study = optuna.load_study(study_name="fedca", storage=f"sqlite:///{sweep / 'optuna.db'}")
    assert [trial.state for trial in study.trials] == [optuna.trial.TrialState.COMPLETE] * 4
    assert [trial.number for trial in study.trials] == [0, 1, 2, 3]
    assert sorted(p.name for p in sweep.iterdir() if (p / ".hydra").is_dir()) == ["0", "1", "2", "3"]
    for trial in study.trials:
        job = sweep / str(trial.number)
        summary = json.loads((job / "summary.json").read_text())
        assert _status(job) == "complete"
        assert trial.value == summary["selected"]["val"]["hr@10"]  # the objective is the selected round's val hr@10
        assert summary["protocol"]["select_by"] == "val"
        overrides = yaml.safe_load((job / ".hydra" / "overrides.yaml").read_text())
        assert {f"agg.w_sim={trial.params['agg.w_sim']}", "rounds=2"} <= set(overrides)
    assert study.trials[0].params == killed.trials[0].params and study.trials[1].params == killed.trials[1].params
    again = _fedca(*STUDY, f"hydra.sweep.dir={sweep}")
    assert again.returncode == 0 and len(optuna.load_study(
        study_name="fedca", storage=f"sqlite:///{sweep / 'optuna.db'}").trials) == 4  # a finished study runs no more

    report = _fedca("report", str(sweep))
    assert report.returncode == 0, report.stderr
    best = max(study.trials, key=lambda trial: (trial.value, -trial.number))
    line = next(line for line in report.stdout.splitlines() if line.startswith("best trial"))
    assert f"{sweep / str(best.number)} val_hr@10={best.value:.4f}" in line
    assert f"agg.w_sim={best.params['agg.w_sim']}" in line and "(of 4 complete" in line
    assert sum(line.startswith("| ml100k |") for line in report.stdout.splitlines()) == 4  # one row per trial
    assert "incomplete" not in report.stdout
