"""A schedule gives the values an aggregator schedules, per round: ``values(round) -> {name: value}``.

``start`` holds the agg config's scheduled values (``AggConfig.scheduled_values``; composite's
``w_sim``, ``w_comp`` and ``interpolation``), the values at round 0. Each schedule declares its
knobs in its module: a config dataclass (``Schedule.config``, the schema of its
``conf/schedule/`` file, with ``check``) and ``from_config``. Schedules are pure functions of
the round, except ``adaptive``,
which also reads the aggregation statistics of past rounds through ``observe`` and keeps a
small state (``state_dict``) so that a resumed run continues identically.
"""

from dataclasses import dataclass
from typing import ClassVar, Dict, Optional

from omegaconf import MISSING

from fedca.config.fields import check_declared, declared
from fedca.config.rules import require


@dataclass
class ScheduleConfig:
    """The schema of ``conf/schedule/<choice>.yaml`` for a schedule without knobs of its own."""

    name: str = declared(MISSING, "the schedule's name")

    def check(self, scheduled: Dict[str, float]) -> None:
        """FedcaError (one line naming the key) when a knob is out of range or does not fit the
        aggregator's ``scheduled`` values; called before any work starts. The declared ranges
        are checked here; subclasses add their other rules."""
        check_declared(self, "schedule.")


@dataclass
class RampScheduleConfig(ScheduleConfig):
    """linear / cosine: from the agg config's values to these at the last round (None: unchanged)."""

    end_w_sim: Optional[float] = declared(None, "w_sim at the last round (null: stays)", range="[0, inf)")
    end_w_comp: Optional[float] = declared(None, "w_comp at the last round (null: stays)", range="[0, inf)")
    end_interpolation: Optional[float] = declared(None, "interpolation at the last round (null: stays)",
                                                  range="[0, 1]")

    def ends(self) -> Dict[str, Optional[float]]:
        return {"w_sim": self.end_w_sim, "w_comp": self.end_w_comp, "interpolation": self.end_interpolation}

    def check(self, scheduled):
        super().check(scheduled)
        for key, value in self.ends().items():
            if value is not None:
                require(key in scheduled, f"schedule.end_{key}", value,
                        f"the aggregator schedules {', '.join(scheduled)}, not {key}; leave it null")


class Schedule:
    """Base class: constant values; subclasses override ``values`` (and ``observe``)."""

    name = "schedule"
    config: ClassVar[type] = ScheduleConfig

    @classmethod
    def from_config(cls, cfg: ScheduleConfig, start: Dict[str, float], rounds: int) -> "Schedule":
        """The schedule of ``cfg`` from the aggregator's ``start`` values over ``rounds`` rounds."""
        return cls(start, rounds)

    def __init__(self, start: Dict[str, float], rounds: int):
        self.start = dict(start)
        self.rounds = rounds

    def values(self, round_index: int) -> Dict[str, float]:
        return dict(self.start)

    def observe(self, round_index: int, stats: Dict[str, float]) -> None:
        """Take note of the server's statistics after a round (only ``adaptive`` uses them)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what ``state_dict`` returned."""

    def progress(self, round_index: int) -> float:
        """Fraction of the run elapsed at ``round_index`` (0-based): 0 at the first round, 1 at the last."""
        return round_index / max(1, self.rounds - 1)


def ramp(start: Dict[str, float], end: Dict[str, float | None], fraction: float) -> Dict[str, float]:
    """Each value moved ``fraction`` of the way from start to its end value (None: stays)."""
    return {key: value if end.get(key) is None else value + (end[key] - value) * fraction
            for key, value in start.items()}


class RampSchedule(Schedule):
    """Each value moves from its start to its ``end`` value (None: stays) along ``ease``."""

    config = RampScheduleConfig

    @classmethod
    def from_config(cls, cfg, start, rounds):
        return cls(start, rounds, cfg.ends())

    def __init__(self, start: Dict[str, float], rounds: int, end: Dict[str, float | None]):
        super().__init__(start, rounds)
        self.end = dict(end)

    def ease(self, fraction: float) -> float:
        """Share of the way covered when ``fraction`` of the run has elapsed."""
        raise NotImplementedError

    def values(self, round_index: int) -> Dict[str, float]:
        return ramp(self.start, self.end, self.ease(self.progress(round_index)))
