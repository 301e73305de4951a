"""Every schedule, found by name (each module of ``fedca.schedules`` that defines a ``Schedule``
subclass with its own ``name``), and the schedule a config names."""

from functools import lru_cache
from typing import Dict

import fedca.schedules
from fedca.discovery import named_subclasses
from fedca.schedules.base import Schedule
from fedca.schedules.constant import ConstantSchedule


@lru_cache(maxsize=1)
def schedule_classes() -> Dict[str, type]:
    """{name: Schedule subclass}, sorted by name."""
    return named_subclasses(fedca.schedules, Schedule)


def build_schedule(cfg) -> Schedule:
    """The schedule of the run config ``cfg`` over the values its aggregator schedules (validated:
    an aggregator that schedules none runs only with ``schedule=constant``)."""
    start = cfg.agg.scheduled_values()
    if not start:
        return ConstantSchedule({}, cfg.rounds)
    return schedule_classes()[cfg.schedule.name].from_config(cfg.schedule, start, cfg.rounds)
