"""Schedules (fedca/schedules/) built directly and through the registry, with values worked out by hand."""

import math

import pytest

from fedca.config.compose import compose_run_config
from fedca.errors import FedcaError
from fedca.schedules.adaptive import AdaptiveSchedule, AdaptiveScheduleConfig
from fedca.schedules.base import RampSchedule, RampScheduleConfig, Schedule, ramp
from fedca.schedules.constant import ConstantSchedule
from fedca.schedules.cosine import CosineSchedule
from fedca.schedules.linear import LinearSchedule
from fedca.schedules.registry import build_schedule
from fedca.schedules.step import StepSchedule, StepScheduleConfig

START = {"w_sim": 0.2, "w_comp": 0.6, "interpolation": 0.9}


def test_progress_runs_from_zero_at_the_first_round_to_one_at_the_last():
    schedule = Schedule(START, rounds=5)
    assert [schedule.progress(r) for r in range(5)] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert Schedule(START, rounds=1).progress(0) == 0.0  # one round: no division by zero


def test_base_schedule_returns_a_fresh_copy_of_the_start_values():
    schedule = Schedule(START, rounds=3)
    values = schedule.values(2)
    values["w_sim"] = 99.0
    assert schedule.values(0) == START
    schedule.observe(0, {"untrained_share": 1.0})
    assert schedule.values(1) == START and schedule.state_dict() == {}
    schedule.load_state_dict({})
    assert schedule.rounds == 3 and schedule.start is not START


def test_ramp_moves_each_value_the_given_fraction_and_none_stays():
    out = ramp(START, {"w_sim": 1.0, "w_comp": None, "interpolation": 0.5}, 0.25)
    # w_sim: 0.2 + (1.0 - 0.2) * 0.25 = 0.4; interpolation: 0.9 + (0.5 - 0.9) * 0.25 = 0.8
    assert out == pytest.approx({"w_sim": 0.4, "w_comp": 0.6, "interpolation": 0.8}, abs=1e-15)
    assert ramp(START, {}, 0.5) == START  # a missing end value also stays


def test_ramp_schedule_needs_an_ease():
    with pytest.raises(NotImplementedError):
        RampSchedule(START, 3, {"w_sim": 1.0}).values(1)


def test_linear_schedule_at_a_quarter_of_the_run():
    schedule = LinearSchedule(START, 5, {"w_sim": 1.0, "w_comp": None, "interpolation": 0.5})
    assert schedule.values(1) == pytest.approx({"w_sim": 0.4, "w_comp": 0.6, "interpolation": 0.8}, abs=1e-15)
    assert schedule.values(4) == pytest.approx({"w_sim": 1.0, "w_comp": 0.6, "interpolation": 0.5}, abs=1e-15)
    assert schedule.ease(0.3) == 0.3


def test_cosine_schedule_at_a_quarter_of_the_run():
    schedule = CosineSchedule(START, 5, {"w_sim": 1.0, "w_comp": None, "interpolation": None})
    eased = (1 - math.cos(math.pi / 4)) / 2  # (1 - sqrt(2) / 2) / 2 = 0.146...
    assert schedule.values(1)["w_sim"] == pytest.approx(0.2 + 0.8 * eased, abs=1e-15)
    assert schedule.values(4)["w_sim"] == pytest.approx(1.0, abs=1e-15)
    assert schedule.ease(0.0) == 0.0 and schedule.ease(1.0) == pytest.approx(1.0, abs=1e-15)
    assert schedule.ease(0.5) == pytest.approx(0.5, abs=1e-15)


def test_step_schedule_counts_milestones_up_to_the_one_based_round():
    schedule = StepSchedule(START, 10, milestones=[6, 3], gamma=0.5, keys=["w_comp"])
    # round index r is round r + 1: milestone 3 is passed from index 2, milestone 6 from index 5
    assert [schedule.values(r)["w_comp"] for r in (0, 1, 2, 4, 5, 9)] == [0.6, 0.6, 0.3, 0.3, 0.15, 0.15]
    assert schedule.values(9)["w_sim"] == 0.2 and schedule.values(9)["interpolation"] == 0.9
    assert schedule.milestones == [3, 6] and schedule.keys == ("w_comp",)


def test_step_schedule_caps_interpolation_at_one():
    schedule = StepSchedule(START, 4, milestones=[1, 2], gamma=1.25, keys=["interpolation", "w_sim"])
    # index 0: one milestone passed, 0.9 * 1.25 = 1.125 -> capped at 1; w_sim 0.2 * 1.25 = 0.25
    assert schedule.values(0) == pytest.approx({"w_sim": 0.25, "w_comp": 0.6, "interpolation": 1.0}, abs=1e-15)
    schedule = StepSchedule(START, 4, milestones=[1], gamma=0.5, keys=["interpolation"])
    assert schedule.values(0)["interpolation"] == 0.45  # below 1: not capped
    assert StepSchedule({"w_sim": 2.0}, 4, [1], 3.0, ["w_sim"]).values(0) == {"w_sim": 6.0}  # no interpolation key


def test_adaptive_schedule_moves_the_share_towards_the_untrained_share():
    schedule = AdaptiveSchedule({"w_sim": 0.3, "w_comp": 0.1, "interpolation": 0.7}, 10, rate=0.5, lo=0.0, hi=1.0)
    # total 0.4, share 0.1 / 0.4 = 0.25
    assert schedule.values(0) == pytest.approx({"w_sim": 0.3, "w_comp": 0.1, "interpolation": 0.7}, abs=1e-15)
    schedule.observe(0, {"untrained_share": 0.75})
    # share = 0.5 * 0.25 + 0.5 * 0.75 = 0.5: both weights 0.4 * 0.5 = 0.2
    assert schedule.values(1) == pytest.approx({"w_sim": 0.2, "w_comp": 0.2, "interpolation": 0.7}, abs=1e-15)
    schedule.observe(1, {"other": 1.0})  # nothing to learn from
    assert schedule.share == pytest.approx(0.5, abs=1e-15)
    assert schedule.state_dict() == {"share": pytest.approx(0.5, abs=1e-15)}


def test_adaptive_schedule_clips_each_weight():
    schedule = AdaptiveSchedule({"w_sim": 0.3, "w_comp": 0.1}, 10, rate=1.0, lo=0.15, hi=0.25)
    # share 0.25: w_comp = 0.1 -> 0.15 (lo), w_sim = 0.3 -> 0.25 (hi)
    assert schedule.values(0) == pytest.approx({"w_sim": 0.25, "w_comp": 0.15}, abs=1e-15)
    schedule.observe(0, {"untrained_share": 0.5})  # rate 1: share = 0.5, both 0.2 inside the bounds
    assert schedule.values(1) == pytest.approx({"w_sim": 0.2, "w_comp": 0.2}, abs=1e-15)


def test_adaptive_schedule_with_zero_total_starts_halfway_and_restores_its_share():
    schedule = AdaptiveSchedule({"w_sim": 0.0, "w_comp": 0.0}, 3, rate=0.5, lo=0.0, hi=1.0)
    assert schedule.share == 0.5 and schedule.values(0) == {"w_sim": 0.0, "w_comp": 0.0}
    schedule.load_state_dict({"share": "0.125"})
    assert schedule.share == 0.125


def build(*overrides, rounds=11):
    return build_schedule(compose_run_config(["agg=composite", f"rounds={rounds}", *overrides]))


def test_registry_builds_each_schedule_from_its_config():
    start = {"w_sim": 0.3, "w_comp": 0.3, "interpolation": 0.9}  # the composite agg config's values
    constant = build()
    assert type(constant) is ConstantSchedule and constant.start == start and constant.rounds == 11
    linear = build("schedule=linear", "schedule.end_w_sim=0.1", "schedule.end_w_comp=0.5",
                   "schedule.end_interpolation=0.4")
    assert type(linear) is LinearSchedule and linear.start == start
    assert linear.end == {"w_sim": 0.1, "w_comp": 0.5, "interpolation": 0.4}
    cosine = build("schedule=cosine", "schedule.end_w_comp=0.0", rounds=4)
    assert type(cosine) is CosineSchedule and cosine.rounds == 4
    assert cosine.end == {"w_sim": None, "w_comp": 0.0, "interpolation": None}
    step = build("schedule=step", "schedule.milestones=[4,2]", "schedule.gamma=0.25", "schedule.keys=[w_comp]")
    assert type(step) is StepSchedule and step.start == start
    assert (step.milestones, step.gamma, step.keys) == ([2, 4], 0.25, ("w_comp",))
    adaptive = build("schedule=adaptive", "schedule.rate=0.2", "schedule.min_weight=0.05", "schedule.max_weight=0.6")
    assert type(adaptive) is AdaptiveSchedule and adaptive.start == start
    assert (adaptive.rate, adaptive.lo, adaptive.hi, adaptive.total) == (0.2, 0.05, 0.6, 0.6)


def test_registry_gives_other_aggregators_an_empty_constant_schedule():
    schedule = build_schedule(compose_run_config(["agg=fedavg", "rounds=3"]))
    assert type(schedule) is ConstantSchedule and schedule.values(0) == {} and schedule.rounds == 3


def test_a_schedule_that_does_not_fit_the_aggregator_fails_when_the_config_is_composed():
    with pytest.raises(FedcaError, match=r"^schedule=cosine moves the values an aggregator schedules; "
                                         r"agg=fedavg schedules none, .*\(agg=composite schedules some\)$"):
        compose_run_config(["agg=fedavg", "schedule=cosine"])


def test_a_schedule_that_does_not_fit_stops_the_cli_before_any_file_is_written(tmp_path, capsys):
    from fedca.cli import main

    assert main(["run", "agg=fedavg", "schedule=linear", f"hydra.run.dir={tmp_path / 'run'}"]) == 2
    assert ("schedule=linear moves the values an aggregator schedules; agg=fedavg schedules none"
            in capsys.readouterr().err)
    assert not (tmp_path / "run").exists()


# --- the schedule configs' own rules (fedca/schedules/*: XScheduleConfig.check), message by message

WEIGHTS_ONLY = {"w_sim": 0.2, "w_comp": 0.6}  # an aggregator that schedules the weights but no interpolation


def _refusal(config, scheduled) -> str:
    with pytest.raises(FedcaError) as caught:
        config.check(scheduled)
    return str(caught.value)


def test_progress_of_a_two_round_run_reaches_one_at_its_second_round():
    assert Schedule(START, rounds=2).progress(1) == 1.0


def test_a_ramp_end_for_a_value_the_aggregator_does_not_schedule_is_refused_naming_it():
    RampScheduleConfig(name="linear", end_w_sim=0.1).check(WEIGHTS_ONLY)  # scheduled: fine
    RampScheduleConfig(name="linear").check({})  # no end set: nothing to refuse
    assert _refusal(RampScheduleConfig(name="linear", end_interpolation=0.5), WEIGHTS_ONLY) == (
        "schedule.end_interpolation=0.5 is out of range: the aggregator schedules w_sim, w_comp, not "
        "interpolation; leave it null")


def test_a_ramp_end_outside_its_declared_range_is_refused_with_its_full_key():
    assert _refusal(RampScheduleConfig(name="cosine", end_interpolation=2.0), START) == (
        "schedule.end_interpolation=2.0 is out of range: must be in [0, 1]")
    assert _refusal(RampScheduleConfig(name="cosine", end_w_comp=-1.0), START) == (
        "schedule.end_w_comp=-1.0 is out of range: must be >= 0")


def test_step_keys_must_be_scheduled_values():
    StepScheduleConfig(name="step", keys=["w_sim", "w_comp"]).check(WEIGHTS_ONLY)
    assert _refusal(StepScheduleConfig(name="step", keys=["interpolation"]), WEIGHTS_ONLY) == (
        "schedule.keys='interpolation' is not a known choice; use one of: w_sim, w_comp")
    assert _refusal(StepScheduleConfig(name="step", gamma=0.0), START) == (
        "schedule.gamma=0.0 is out of range: must be > 0")


def test_adaptive_needs_both_weights_and_an_ordered_clip_range():
    AdaptiveScheduleConfig(name="adaptive").check(WEIGHTS_ONLY)  # exactly the two weights: fine
    AdaptiveScheduleConfig(name="adaptive", min_weight=0.4, max_weight=0.4).check(START)  # equal bounds: fine
    assert _refusal(AdaptiveScheduleConfig(name="adaptive"), {"interpolation": 0.9}) == (
        "schedule='adaptive' is out of range: moves w_sim and w_comp; the aggregator schedules interpolation")
    assert _refusal(AdaptiveScheduleConfig(name="adaptive"), {"w_sim": 0.2, "interpolation": 0.9}) == (
        "schedule='adaptive' is out of range: moves w_sim and w_comp; the aggregator schedules w_sim, interpolation")
    assert _refusal(AdaptiveScheduleConfig(name="adaptive", min_weight=0.5, max_weight=0.4), START) == (
        "schedule.min_weight=0.5 is out of range: must be in [0, schedule.max_weight=0.4]")
    assert _refusal(AdaptiveScheduleConfig(name="adaptive", rate=0.0), START) == (
        "schedule.rate=0.0 is out of range: must be in (0, 1]")
