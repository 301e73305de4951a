"""Build the schedule a config names (the only reader of schedule config fields)."""

from fedca.aggregators.composite import CompositeAggConfig
from fedca.config.schema import RunConfig
from fedca.schedules.adaptive import AdaptiveSchedule
from fedca.schedules.base import Schedule
from fedca.schedules.constant import ConstantSchedule
from fedca.schedules.cosine import CosineSchedule
from fedca.schedules.linear import LinearSchedule
from fedca.schedules.step import StepSchedule


def build_schedule(cfg: RunConfig) -> Schedule:
    """The schedule of ``cfg`` (validated: a schedule other than constant only with composite
    aggregation, the only one with weights to schedule)."""
    sched = cfg.schedule
    if not isinstance(cfg.agg, CompositeAggConfig):
        return ConstantSchedule({}, cfg.rounds)
    start = {"w_sim": cfg.agg.w_sim, "w_comp": cfg.agg.w_comp, "interpolation": cfg.agg.interpolation}
    end = {"w_sim": getattr(sched, "end_w_sim", None), "w_comp": getattr(sched, "end_w_comp", None),
           "interpolation": getattr(sched, "end_interpolation", None)}
    if sched.name == "constant":
        return ConstantSchedule(start, cfg.rounds)
    if sched.name == "linear":
        return LinearSchedule(start, cfg.rounds, end)
    if sched.name == "cosine":
        return CosineSchedule(start, cfg.rounds, end)
    if sched.name == "step":
        return StepSchedule(start, cfg.rounds, list(sched.milestones), sched.gamma, list(sched.keys))
    return AdaptiveSchedule(start, cfg.rounds, sched.rate, sched.min_weight, sched.max_weight)
