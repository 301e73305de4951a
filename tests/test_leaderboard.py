"""fedca leaderboard: preset rules, the pipeline killed and resumed, tuning on validation only,
a finished pipeline that changes nothing, and the tables rendered from the ledger."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from scipy import stats

from fedca.cli import main
from fedca.errors import FedcaError
from fedca.leaderboard.config import load
from fedca.leaderboard.ledger import Ledger
from fedca.leaderboard.pipeline import Cell, check_rerun_is_the_trial, tune_dir
from fedca.leaderboard.table import markdown, tables

TINY = ["datasets=[filmtrust]", "methods={fedavg: {tune: fedavg}, local: {tune: local}}", "trials=2",
        "seeds=[0,1]", "rounds=2", "jobs=1", "threads=1",
        "protocols={strict: [protocol=strict], official: [protocol=fedca]}"]


@pytest.mark.parametrize("override, message", [
    ("baseline=fedx", "baseline 'fedx' is not one of its methods"),
    ("tune_seed=0", "tune_seed 0 is one of the rerun seeds"),
    ("seeds=[3]", "at least two distinct seeds"),
    ("trials=0", "trials must be >= 1"),
    ("datasets=[nowhere]", "unknown dataset 'nowhere'"),
    ("methods.fedavg.tune=nothing", "unknown tune 'nothing'"),
    ("common=[seed=3]", "seed is set by the pipeline itself"),
    ("common=[hydra.job.chdir=true]", "hydra.job.chdir is set by the pipeline itself"),
    ("methods.fedavg.fixed=['agg.lr=0.1,0.2']", "is a sweep"),
    ("methods.fedavg.fixed=[agg.lr]", "is not KEY=VALUE"),
    ("protocols.strict=[protocol=strict,protocol.select_by=test]", "would tune on the test set"),
    ("trials=many", "trials"),
    ("tune_protocol=official_full", "tune_protocol 'official_full' is not one of its protocols"),
])
def test_a_bad_preset_stops_with_one_line_before_anything_runs(override, message, tmp_path, capsys):
    out = tmp_path / "out"
    code = main(["leaderboard", "+leaderboard=strict", override, f"out={out}", f"ledger={tmp_path / 'ledger'}"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1 and err.startswith("error: ")
    assert not out.exists() and not (tmp_path / "ledger").exists()


def test_an_unknown_preset_names_the_presets(capsys):
    assert main(["leaderboard", "+leaderboard=nothing"]) == 2
    assert "unknown leaderboard 'nothing'; choose one of: strict" in capsys.readouterr().err


def _pipeline(tmp_path, *extra):
    return [sys.executable, "-m", "fedca", "leaderboard", "+leaderboard=strict", *TINY, f"out={tmp_path / 'out'}",
            f"ledger={tmp_path / 'ledger'}", *extra]


def _trial_complete(folder: Path) -> bool:
    try:
        return json.loads((folder / "status.json").read_text())["status"] == "complete"
    except (OSError, ValueError, KeyError):
        return False


def _children_of(folder: Path) -> list:
    """Processes whose command line names ``folder`` (the pipeline's fedca children)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            if str(folder) in (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                found.append(int(proc.name))
        except OSError:
            pass
    return found


@pytest.fixture(scope="module")
def finished(real_data_env, tmp_path_factory):
    """A tiny pipeline killed with SIGKILL during its first study, then rerun to the end."""
    tmp_path = tmp_path_factory.mktemp("leaderboard")
    env = dict(os.environ)
    pipeline = subprocess.Popen(_pipeline(tmp_path), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
    first_trial = tmp_path / "out" / "tune" / "filmtrust" / "fedavg" / "0"
    deadline = time.monotonic() + 300
    while not _trial_complete(first_trial):
        assert pipeline.poll() is None, pipeline.stderr.read()
        assert time.monotonic() < deadline, "the first trial never completed"
        time.sleep(0.05)
    pipeline.send_signal(signal.SIGKILL)
    pipeline.wait()
    deadline = time.monotonic() + 60
    while _children_of(tmp_path / "out") and time.monotonic() < deadline:  # PR_SET_PDEATHSIG: SIGTERM, round end
        time.sleep(0.2)
    orphans = _children_of(tmp_path / "out")
    assert not (tmp_path / "ledger" / "tuned.csv").exists()
    resumed = subprocess.run(_pipeline(tmp_path), env=env, capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr
    return {"path": tmp_path, "orphans": orphans, "resumed": resumed.stdout, "env": env}


def test_a_killed_pipeline_leaves_no_child_running_and_resumes_to_the_end(finished):
    assert finished["orphans"] == []
    ledger = finished["path"] / "ledger"
    tuned, results = pd.read_csv(ledger / "tuned.csv"), pd.read_csv(ledger / "results.csv")
    assert sorted(tuned["method"]) == ["fedavg", "local"] and set(tuned["trials"]) == {2}
    assert len(results) == 2 * 2 * 2  # methods x protocols x seeds
    for (column, method), rows in results.groupby(["column", "method"]):
        assert sorted(rows["seed"]) == [0, 1], (column, method)
    assert set(results.loc[results["column"] == "official", "protocol"]) == {"fedca"}
    assert set(results.loc[results["column"] == "strict", "protocol"]) == {"strict"}
    per_user = pd.read_csv(ledger / "per_user" / "strict" / "filmtrust.csv")
    assert list(per_user.columns) == ["user", "fedavg", "local"] and len(per_user) > 1000


def test_each_study_ran_its_trials_once_with_the_validation_metric_as_objective(finished):
    tuned = pd.read_csv(finished["path"] / "ledger" / "tuned.csv").set_index("method")
    for method in ("fedavg", "local"):
        folder = finished["path"] / "out" / "tune" / "filmtrust" / method
        study = optuna.load_study(study_name="fedca", storage=f"sqlite:///{folder / 'optuna.db'}")
        trials = [trial for trial in study.trials if trial.state == optuna.trial.TrialState.COMPLETE]
        assert sorted(trial.number for trial in trials) == [0, 1]
        for trial in trials:
            summary = json.loads((folder / str(trial.number) / "summary.json").read_text())
            assert summary["select_metric"] == "hr@10"
            assert trial.value == summary["selected"]["val"]["hr@10"]
            assert summary["protocol"]["select_by"] == "val"
        assert tuned.loc[method, "value"] == max(trial.value for trial in trials)
        assert tuned.loc[method, "objective"] == "val_hr@10"


def test_a_finished_pipeline_starts_nothing_and_changes_nothing(finished):
    ledger, logs = finished["path"] / "ledger", finished["path"] / "out" / "logs"
    before = {path: (path.read_bytes(), path.stat().st_mtime_ns) for folder in (ledger, logs)
              for path in folder.rglob("*") if path.is_file()}
    again = subprocess.run(_pipeline(finished["path"]), env=finished["env"], capture_output=True, text=True,
                           timeout=300)
    assert again.returncode == 0, again.stderr
    assert "0 trials and 0 reruns left" in again.stdout and "search" not in again.stdout
    after = {path: (path.read_bytes(), path.stat().st_mtime_ns) for folder in (ledger, logs)
             for path in folder.rglob("*") if path.is_file()}
    assert after == before


def test_a_preset_that_changed_a_recorded_field_is_refused(finished, capsys):
    code = main(["leaderboard", "+leaderboard=strict", *TINY, "rounds=3", f"out={finished['path'] / 'out2'}",
                 f"ledger={finished['path'] / 'ledger'}"])
    assert code == 2 and "was recorded with other rounds" in capsys.readouterr().err


def test_the_rerun_config_must_be_the_best_trials(finished):
    cfg = load("strict", [*TINY, f"out={finished['path'] / 'out'}", f"ledger={finished['path'] / 'ledger'}"])
    cell = Cell("filmtrust", "fedavg")
    best = json.loads(json.dumps(Ledger(cfg.ledger, json.loads((Path(cfg.ledger) / "preset.json").read_text()))
                                 .best("filmtrust", "fedavg")))
    trial = next(p for p in tune_dir(cfg, cell).iterdir() if p.name.isdigit()
                 and json.loads((p / "summary.json").read_text())["selected"]["val"]["hr@10"] == best["value"])
    check_rerun_is_the_trial(cfg, cell, {**best, "trial": trial.name})
    with pytest.raises(FedcaError, match="differs from the best trial's in model"):
        check_rerun_is_the_trial(cfg, cell, {**best, "trial": trial.name, "params": []})
    # a trial run before a field existed (here: store) agrees while the rerun keeps its default
    older = tune_dir(cfg, cell) / "older-trial"
    older.mkdir(exist_ok=True)
    saved = yaml.safe_load((trial / "config.yaml").read_text())
    del saved["store"]
    (older / "config.yaml").write_text(yaml.safe_dump(saved))
    check_rerun_is_the_trial(cfg, cell, {**best, "trial": older.name})
    with pytest.raises(FedcaError, match="differs from the best trial's in store"):
        check_rerun_is_the_trial(cfg, cell, {**best, "trial": older.name, "params": [*best["params"], "store=half"]})


def _ledger_with(tmp_path, baseline_hr, method_hr, seeds=(0, 1, 2)):
    preset = {"baseline": "fedavg", "seeds": [0, 1, 2], "datasets": ["ml100k"], "methods": {"fedavg": {}, "x": {}},
              "protocols": {"strict": ["protocol=strict"]}, "recorded": {}}
    ledger = Ledger(tmp_path, preset)
    users = pd.Index(range(50), name="user")
    for method, values in (("fedavg", baseline_hr), ("x", method_hr)):
        rows = pd.DataFrame({"seed": list(seeds), "test_hr@10": values[:len(seeds)],
                             "test_ndcg@10": [v / 2 for v in values[:len(seeds)]]})
        per_user = pd.Series([(u % 10) / 10 + (0.3 if method == "x" else 0.0) for u in users], index=users)
        ledger.record_runs("strict", "ml100k", method, rows, per_user)
    return ledger, preset


def test_the_table_marks_a_significant_difference_and_only_that(tmp_path):
    baseline, better = [0.40, 0.42, 0.41], [0.60, 0.63, 0.61]
    ledger, preset = _ledger_with(tmp_path, baseline, better)
    frames = tables(ledger)
    p_seeds = stats.ttest_rel(better, baseline).pvalue
    row = frames["significance"].iloc[0]
    assert row["p_seeds"] == pytest.approx(p_seeds, rel=1e-12)  # both are scipy's t-test; 1e-12: float printing
    assert row["difference"] == pytest.approx(sum(better) / 3 - sum(baseline) / 3, abs=1e-15)
    text = markdown(frames, preset)
    assert "| x | 0.6133 ± 0.0153 ↑*† |" in text and "| fedavg | 0.4100 ± 0.0100 |" in text


def test_a_difference_within_the_noise_is_not_marked_and_missing_seeds_are_shown(tmp_path):
    ledger, preset = _ledger_with(tmp_path, [0.40, 0.45, 0.41], [0.45, 0.40, 0.44], seeds=(0, 1, 2))
    frames = tables(ledger)
    assert frames["significance"].iloc[0]["p_seeds"] > 0.05
    assert "| x | 0.4300 ± 0.0265 ↑† |" in markdown(frames, preset)  # only the per-user shift (+0.3) is significant
    partial, preset = _ledger_with(tmp_path / "partial", [0.4, 0.5, 0.6], [0.4, 0.5, 0.6], seeds=(0, 1))
    assert "(n=2)" in markdown(tables(partial), preset)


def test_a_method_tuned_on_its_preset_reruns_exactly_the_trial(real_data_env, tmp_path):
    """GPFedRec's tune preset is built on +method=gpfedrec (its backbone and optimiser): the
    ledger records that preset with the sampler's overrides, and the reruns compose to the trial."""
    done = subprocess.run([sys.executable, "-m", "fedca", "leaderboard", "+leaderboard=strict",
                           "datasets=[filmtrust]", "methods={gpfedrec: {tune: gpfedrec}}", "baseline=gpfedrec",
                           "trials=1", "seeds=[0,1]", "rounds=1", "jobs=1", "threads=1",
                           "protocols={strict: [protocol=strict]}", f"out={tmp_path / 'out'}",
                           f"ledger={tmp_path / 'ledger'}"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    tuned = pd.read_csv(tmp_path / "ledger" / "tuned.csv")
    params = tuned.loc[0, "params"].split()
    assert params[0] == "+method=gpfedrec" and {p.partition("=")[0] for p in params[1:]} == {
        "agg.reg", "model.item_lr_eta", "agg.neighborhood_threshold"}
    results = pd.read_csv(tmp_path / "ledger" / "results.csv")
    assert sorted(results["seed"]) == [0, 1] and set(results["method"]) == {"gpfedrec"}


def test_a_study_with_failed_trials_goes_on_with_those_that_completed_and_drops_checkpoints(real_data_env, tmp_path):
    # With a one-layer MLP, FedPer's sampled personal_layers=2 is refused (a failed trial, as a
    # trial diverging to a NaN loss is); personal_layers=1 completes.
    methods = "methods={fedper: {tune: fedper, fixed: ['model.mlp_layers=[32,1]']}, fedavg: {tune: fedavg}}"
    tiny = [*(item for item in TINY if not item.startswith(("methods=", "trials=", "protocols="))), methods, "trials=4",
            "protocols={strict: [protocol=strict]}"]
    done = subprocess.run([sys.executable, "-m", "fedca", "leaderboard", "+leaderboard=strict", *tiny,
                           f"out={tmp_path / 'out'}", f"ledger={tmp_path / 'ledger'}"], capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    folder = tmp_path / "out" / "tune" / "filmtrust" / "fedper"
    states = [trial.state for trial in optuna.load_study(study_name="fedca", storage=f"sqlite:///{folder / 'optuna.db'}").trials]
    failed = states.count(optuna.trial.TrialState.FAIL)
    assert len(states) == 4 and 0 < failed < 4  # the sampler drew both choices
    assert f"search filmtrust/fedper: {failed} of 4 trials failed" in done.stdout
    tuned = pd.read_csv(tmp_path / "ledger" / "tuned.csv").set_index("method")
    assert tuned.loc["fedper", "trials"] == 4 - failed and "agg.personal_layers=1" in tuned.loc["fedper", "params"]
    runs = list((tmp_path / "out").rglob("status.json"))
    assert len(runs) == 4 + 4 + 2 * 2  # both studies' trials, both methods' two seeds
    assert not list((tmp_path / "out").rglob("checkpoint.pt"))
