"""Schedules: values at given rounds, bounds and determinism of the adaptive rule."""

import math

import pytest

from fedca.config.compose import compose_run_config
from fedca.errors import FedcaError
from fedca.schedules.registry import build_schedule


def _schedule(*overrides, rounds=11):
    return build_schedule(compose_run_config(["agg=composite", f"rounds={rounds}", *overrides]))


def test_constant_schedule_repeats_the_agg_values():
    schedule = _schedule()
    assert schedule.values(0) == schedule.values(10) == {"w_sim": 0.3, "w_comp": 0.3, "interpolation": 0.9}


def test_linear_schedule_reaches_the_end_value_at_the_last_round():
    schedule = _schedule("schedule=linear", "schedule.end_w_comp=0.0", "schedule.end_interpolation=0.5")
    assert schedule.values(0)["w_comp"] == pytest.approx(0.3)
    assert schedule.values(5)["w_comp"] == pytest.approx(0.15)
    assert schedule.values(10)["w_comp"] == pytest.approx(0.0)
    assert schedule.values(10)["interpolation"] == pytest.approx(0.5)
    assert schedule.values(7)["w_sim"] == 0.3


def test_cosine_schedule_is_halfway_at_the_middle_and_slow_at_the_ends():
    schedule = _schedule("schedule=cosine", "schedule.end_w_sim=1.3")
    assert schedule.values(5)["w_sim"] == pytest.approx(0.8)
    assert schedule.values(1)["w_sim"] == pytest.approx(0.3 + 1.0 * (1 - math.cos(math.pi / 10)) / 2)


def test_step_schedule_multiplies_at_each_milestone_passed():
    schedule = _schedule("schedule=step", "schedule.milestones=[3,6]", "schedule.gamma=0.5")
    assert [round(schedule.values(r)["w_sim"], 6) for r in (0, 1, 2, 4, 5, 9)] == [0.3, 0.3, 0.15, 0.15, 0.075, 0.075]
    assert schedule.values(9)["interpolation"] == 0.9


def test_adaptive_schedule_stays_in_bounds_and_is_deterministic():
    shares = [0.9, 0.1, 1.0, 0.0, 0.7] * 4
    runs = []
    for _ in range(2):
        schedule = _schedule("schedule=adaptive", "schedule.rate=0.7", "schedule.min_weight=0.05",
                             "schedule.max_weight=0.5", rounds=len(shares))
        trace = []
        for round_index, share in enumerate(shares):
            values = schedule.values(round_index)
            assert 0.05 <= values["w_sim"] <= 0.5 and 0.05 <= values["w_comp"] <= 0.5
            trace.append(values)
            schedule.observe(round_index, {"untrained_share": share})
        runs.append(trace)
    assert runs[0] == runs[1]
    assert runs[0][1]["w_comp"] > runs[0][0]["w_comp"]


def test_adaptive_state_round_trips():
    first = _schedule("schedule=adaptive")
    first.observe(0, {"untrained_share": 0.9})
    second = _schedule("schedule=adaptive")
    second.load_state_dict(first.state_dict())
    assert second.values(1) == first.values(1)


def test_weight_schedules_need_composite_aggregation():
    with pytest.raises(FedcaError, match=r"agg=fedavg schedules none, so only schedule=constant fits it "
                                         r"\(agg=composite schedules some\)"):
        build_schedule(compose_run_config(["agg=fedavg", "schedule=linear"]))


@pytest.mark.parametrize("overrides, key", [(["schedule=step", "schedule.keys=[w_sim,lr]"], "schedule.keys"),
                                            (["schedule=linear", "schedule.end_interpolation=2"],
                                             "schedule.end_interpolation"),
                                            (["schedule=adaptive", "schedule.rate=0"], "schedule.rate")])
def test_a_schedules_own_rules_are_checked_with_the_config(overrides, key):
    with pytest.raises(FedcaError, match=key):
        compose_run_config(["agg=composite", *overrides])
