"""Report tables and plots on synthetic run folders with known numbers (no training, no data)."""

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from fedca.errors import FedcaError
from fedca.results import plots
from fedca.results.report import aggregate, collect, find_runs, to_latex, to_markdown, write_report

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

FEDAVG_HR, FEDAVG_NDCG = [0.40, 0.42, 0.47], [0.20, 0.22, 0.24]
COMPOSITE_HR, COMPOSITE_NDCG = [0.50, 0.53, 0.56], [0.30, 0.30, 0.33]


def make_run(folder: Path, *, agg: str = "composite", seed: int = 0, hr: float = 0.5, ndcg: float = 0.25,
             protocol: str = "fedca", overrides: list | None = None, status: str = "complete",
             error: str | None = None, config_extra: dict | None = None, rounds: int = 3) -> Path:
    """A run folder as `fedca run` writes it: the test metrics climb linearly to ``hr``/``ndcg``
    at the last round, which is also the selected one; val is 0.01 below test."""
    folder.mkdir(parents=True)
    config = {"dataset": {"name": "ml100k"}, "model": {"name": "fcf"}, "seed": seed, "rounds": rounds,
              "agg": {"name": agg, **({"w_sim": 0.3} if agg == "composite" else {})},
              "protocol": {"name": protocol, "ties": "pessimistic"}}
    for key, value in (config_extra or {}).items():
        section, name = key.split(".")
        config.setdefault(section, {})[name] = value
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    if overrides is not None:
        (folder / ".hydra").mkdir()
        (folder / ".hydra" / "overrides.yaml").write_text(yaml.safe_dump(overrides))
        (folder / ".hydra" / "config.yaml").write_text(yaml.safe_dump(config))
    (folder / "status.json").write_text(json.dumps({"status": status, "run_id": folder.name,
                                                    **({"error": error} if error else {})}))
    if status == "running":
        return folder
    rows = [{"run_id": folder.name, "round": r, "split": split, "hr@10": hr * r / rounds - shift,
             "ndcg@10": ndcg * r / rounds - shift, "train_loss": 1.0 / r, "seconds": 0.1,
             "protocol_name": protocol, "protocol_ties": "pessimistic"}
            for r in range(1, rounds + 1) for split, shift in (("val", 0.01), ("test", 0.0))]
    pd.DataFrame(rows).to_csv(folder / "rounds.csv", index=False)
    at_last = {"round": rounds, "val": {"hr@10": hr - 0.01, "ndcg@10": ndcg - 0.01},
               "test": {"hr@10": hr, "ndcg@10": ndcg}}
    if status == "complete":
        summary = {"dataset": "ml100k", "model": "fcf", "agg": agg, "seed": seed, "rounds": rounds,
                   "select_metric": "hr@10", "selected": at_last, "best_test": at_last, "final": at_last,
                   "wall_seconds": 2.0 + seed, "protocol": {"name": protocol, "ties": "pessimistic"}}
        (folder / "summary.json").write_text(json.dumps(summary))
    return folder


def make_sweep(root: Path) -> Path:
    """A Hydra multirun folder: agg=fedavg,composite × seed=0,1,2, jobs numbered 0..5."""
    root.mkdir(parents=True)
    (root / "multirun.yaml").write_text("hydra: {}\n")
    job = 0
    for agg, hrs, ndcgs in (("fedavg", FEDAVG_HR, FEDAVG_NDCG), ("composite", COMPOSITE_HR, COMPOSITE_NDCG)):
        for seed, (hr, ndcg) in enumerate(zip(hrs, ndcgs)):
            make_run(root / str(job), agg=agg, seed=seed, hr=hr, ndcg=ndcg, overrides=[f"agg={agg}", f"seed={seed}"])
            job += 1
    return root


def test_sweep_of_two_aggs_over_three_seeds_gives_two_rows_with_mean_and_sample_std(tmp_path):
    complete, incomplete = collect([make_sweep(tmp_path / "sweep")])
    grouped = aggregate(complete).set_index("agg")

    assert len(complete) == 6 and incomplete.empty
    assert list(grouped.index) == ["fedavg", "composite"]
    assert list(grouped["n_seeds"]) == [3, 3]
    assert grouped.loc["fedavg", "test_hr@10_mean"] == pytest.approx(0.43)
    assert grouped.loc["fedavg", "test_hr@10_std"] == pytest.approx(0.0013 ** 0.5)
    assert grouped.loc["composite", "test_hr@10_mean"] == pytest.approx(0.53)
    assert grouped.loc["composite", "test_hr@10_std"] == pytest.approx(0.03)
    assert grouped.loc["composite", "test_ndcg@10_mean"] == pytest.approx(0.31)
    assert grouped.loc["composite", "test_ndcg@10_std"] == pytest.approx(0.0003 ** 0.5)
    assert grouped.loc["fedavg", "val_hr@10_mean"] == pytest.approx(0.42)
    assert grouped.loc["fedavg", "wall_seconds_mean"] == pytest.approx(3.0)
    assert "seed" not in grouped.columns and "run_dir" not in grouped.columns


def test_per_run_table_has_descriptive_columns_selected_round_and_metrics(tmp_path):
    complete, _ = collect([make_sweep(tmp_path / "sweep")])

    assert list(complete.columns) == ["run_dir", "dataset", "model", "agg", "seed", "protocol", "protocol_hash",
                                      "selected_round",
                                      "val_hr@10", "val_ndcg@10", "test_hr@10", "test_ndcg@10", "best_test_hr@10",
                                      "best_test_ndcg@10", "final_test_hr@10", "final_test_ndcg@10", "round_seconds",
                                      "wall_seconds"]
    assert list(complete["seed"]) == [0, 1, 2, 0, 1, 2]
    assert (complete["round_seconds"] == 0.1).all()  # the median round time from rounds.csv
    assert (complete["selected_round"] == 3).all()


def test_running_failed_and_unmarked_runs_are_listed_apart_and_not_in_the_table(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    make_run(sweep / "6", agg="fedavg", seed=3, hr=0.99, status="running", overrides=["agg=fedavg", "seed=3"])
    make_run(sweep / "7", agg="fedavg", seed=4, hr=0.99, status="failed", error="dataset.file: no such file",
             overrides=["agg=fedavg", "seed=4"])
    (sweep / "8" / ".hydra").mkdir(parents=True)

    complete, incomplete = collect([sweep])
    grouped = aggregate(complete).set_index("agg")

    assert dict(zip(incomplete["run_dir"].map(lambda p: Path(p).name), incomplete["status"])) == {
        "6": "running", "7": "failed", "8": "missing"}
    assert incomplete.set_index("status").loc["failed", "error"] == "dataset.file: no such file"
    assert len(complete) == 6 and grouped.loc["fedavg", "n_seeds"] == 3
    assert grouped.loc["fedavg", "test_hr@10_mean"] == pytest.approx(0.43)


def test_runs_under_two_protocols_raise_unless_mixing_is_asked_for(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    make_run(tmp_path / "strict_run", agg="fedavg", seed=0, hr=0.3, protocol="strict", overrides=["protocol=strict"])
    complete, _ = collect([sweep, tmp_path / "strict_run"])

    with pytest.raises(FedcaError, match=r"fedca, strict.*--mix-protocols"):
        aggregate(complete)
    mixed = aggregate(complete, mix_protocols=True)
    assert sorted(zip(mixed["agg"], mixed["protocol"])) == [("composite", "fedca"), ("fedavg", "fedca"),
                                                            ("fedavg", "strict")]


def test_swept_override_keys_become_columns_and_group_choices_stay_plain(tmp_path):
    sweep = tmp_path / "sweep"
    for job, (w_sim, seed) in enumerate([(0.1, 0), (0.5, 0), (0.5, 1)]):
        make_run(sweep / str(job), seed=seed, config_extra={"agg.w_sim": w_sim},
                 overrides=["agg=composite", f"seed={seed}", f"agg.w_sim={w_sim}", "+tag=ablation", "~note",
                            "progress=false"])
    make_run(tmp_path / "in_process", seed=0)

    complete, _ = collect([sweep, tmp_path / "in_process"])
    grouped = aggregate(complete)

    assert list(complete.columns[:10]) == ["run_dir", "dataset", "model", "agg", "seed", "protocol", "protocol_hash",
                                           "agg.w_sim", "tag", "note"]
    assert "progress" not in complete.columns
    assert list(complete["agg.w_sim"]) == [0.1, 0.5, 0.5, 0.3]
    assert list(complete["tag"])[:3] == ["ablation"] * 3 and pd.isna(complete["tag"].iloc[3])
    assert list(grouped["agg.w_sim"]) == [0.1, 0.5, 0.3] and list(grouped["n_seeds"]) == [1, 2, 1]


def test_a_swept_config_group_is_filled_in_for_runs_that_kept_the_default(tmp_path):
    make_run(tmp_path / "linear", config_extra={"schedule.name": "linear"}, overrides=["schedule=linear"])
    make_run(tmp_path / "default", config_extra={"schedule.name": "constant"}, overrides=["threads=2"])

    complete, _ = collect([tmp_path])

    assert list(complete["schedule"]) == ["constant", "linear"]
    assert "threads" not in complete.columns


def test_an_ablation_group_choice_stays_apart_from_the_method_it_configures(tmp_path):
    make_run(tmp_path / "base", agg="composite", overrides=["agg=composite"])
    make_run(tmp_path / "sim_only", agg="composite", hr=0.2, overrides=["agg=composite_sim_only"])

    grouped = aggregate(collect([tmp_path])[0])

    assert list(grouped["agg"]) == ["composite", "composite_sim_only"]


def test_find_runs_skips_the_multirun_root_and_hydra_folders_in_natural_order(tmp_path):
    sweep = tmp_path / "sweep"
    for job in (0, 2, 10):
        make_run(sweep / str(job), seed=job, overrides=[f"seed={job}"])

    runs = find_runs([sweep, sweep / "2"])

    assert [run.name for run in runs] == ["0", "2", "10"]


def test_missing_folder_or_no_runs_is_an_input_error(tmp_path):
    with pytest.raises(FedcaError, match="no such folder"):
        collect([tmp_path / "nope"])
    with pytest.raises(FedcaError, match="no run folders"):
        collect([tmp_path])


def test_markdown_and_latex_show_mean_plus_minus_std_and_group_names(tmp_path):
    complete, _ = collect([make_sweep(tmp_path / "sweep")])
    grouped = aggregate(complete)

    markdown = to_markdown(grouped)
    lines = markdown.splitlines()
    assert lines[0] == ("| dataset | model | agg | protocol | n_seeds | val_hr@10 | val_ndcg@10 | test_hr@10 "
                        "| test_ndcg@10 | round_seconds |")
    assert "| ml100k | fcf | fedavg | fedca | 3 |" in lines[2] and "0.4300 ± 0.0361" in lines[2]
    assert "composite" in lines[3] and "0.5300 ± 0.0300" in lines[3]
    only_test = to_markdown(grouped, metrics=["test_hr@10"])
    assert only_test.splitlines()[0].endswith("| n_seeds | test_hr@10 |")
    latex = to_latex(grouped)
    assert "$0.4300 \\pm 0.0361$" in latex and "val\\_hr@10" in latex and "\\bottomrule" in latex
    with pytest.raises(FedcaError, match="unknown metric"):
        to_markdown(grouped, metrics=["test_mrr@10"])


def test_write_report_writes_tables_and_convergence_pngs(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    make_run(sweep / "6", status="failed", error="boom", overrides=["seed=9"])
    out = tmp_path / "report"

    result = write_report([sweep], out, plot=True)

    names = sorted(path.name for path in result["files"])
    assert names == ["convergence_hr.png", "convergence_ndcg.png", "results.csv", "results.md",
                     "results.tex", "results_grouped.csv"]
    assert all(path.is_file() for path in result["files"])
    assert list(result["incomplete"]["status"]) == ["failed"]
    assert "±" in result["table"] and result["table"] in (out / "results.md").read_text()
    assert "boom" in (out / "results.md").read_text()
    assert len(pd.read_csv(out / "results.csv")) == 6 and len(pd.read_csv(out / "results_grouped.csv")) == 2
    for name in ("convergence_hr.png", "convergence_ndcg.png"):
        assert_valid_png(out / name)


def test_sensitivity_plot_over_a_swept_numeric_override(tmp_path):
    sweep = tmp_path / "sweep"
    job = 0
    for w_sim in (0.1, 0.3, 0.5):
        for seed in (0, 1):
            make_run(sweep / str(job), seed=seed, hr=0.4 + w_sim / 2 + seed / 100, config_extra={"agg.w_sim": w_sim},
                     overrides=["agg=composite", f"agg.w_sim={w_sim}", f"seed={seed}"])
            job += 1
    make_run(sweep / str(job), agg="fedavg", seed=0, overrides=["agg=fedavg", "seed=0"])
    out = tmp_path / "report"

    result = write_report([sweep], out, sensitivity_param="agg.w_sim")
    grouped = pd.read_csv(out / "results_grouped.csv")

    assert out / "sensitivity_agg.w_sim.png" in result["files"]
    assert_valid_png(out / "sensitivity_agg.w_sim.png")
    composite = grouped[grouped["agg"] == "composite"]
    assert list(composite["agg.w_sim"]) == [0.1, 0.3, 0.5]
    assert list(composite["test_hr@10_mean"]) == pytest.approx([0.455, 0.555, 0.655])


def test_an_unknown_sensitivity_parameter_is_an_input_error_before_anything_is_written(tmp_path):
    sweep = make_sweep(tmp_path / "sweep")
    out = tmp_path / "report"

    with pytest.raises(FedcaError, match="no swept parameter 'agg.w_comp'.*agg"):
        write_report([sweep], out, sensitivity_param="agg.w_comp")
    assert not out.exists()


def test_plots_without_matplotlib_ask_for_the_plots_extra(tmp_path, monkeypatch):
    run = make_run(tmp_path / "run", overrides=[])
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)

    with pytest.raises(FedcaError, match=r"fedca\[plots\]"):
        plots.convergence_plot({"composite": [run]}, "hr@10", "test", tmp_path / "c.png")


def assert_valid_png(path: Path) -> None:
    from matplotlib.image import imread

    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0
