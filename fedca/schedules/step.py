"""Step schedule: the listed values are multiplied by ``gamma`` at every milestone round passed."""

from dataclasses import dataclass
from typing import List

from fedca.config.fields import declared
from fedca.config.rules import choice
from fedca.schedules.base import Schedule, ScheduleConfig


@dataclass
class StepScheduleConfig(ScheduleConfig):
    """step: multiply ``keys`` by ``gamma`` at every milestone (1-based round) passed."""

    milestones: List[int] = declared([50], "rounds (counted from 1) at which the values are multiplied",
                                     range="[1, inf)")
    gamma: float = declared(0.5, "the factor", range="(0, inf)")
    keys: List[str] = declared(["w_sim", "w_comp"], "which scheduled values step")

    def check(self, scheduled):
        super().check(scheduled)
        for key in self.keys:
            choice("schedule.keys", key, scheduled)


class StepSchedule(Schedule):
    """v(t) = v0 * gamma ** (number of milestones <= t + 1), for the keys in ``keys``;
    milestones are 1-based round numbers as written in rounds.csv. Interpolation is capped at 1."""

    name = "step"
    config = StepScheduleConfig

    @classmethod
    def from_config(cls, cfg, start, rounds):
        return cls(start, rounds, list(cfg.milestones), cfg.gamma, list(cfg.keys))

    def __init__(self, start, rounds, milestones, gamma, keys):
        super().__init__(start, rounds)
        self.milestones = sorted(milestones)
        self.gamma = gamma
        self.keys = tuple(keys)

    def values(self, round_index):
        passed = sum(1 for milestone in self.milestones if milestone <= round_index + 1)
        factor = self.gamma ** passed
        out = {key: value * factor if key in self.keys else value for key, value in self.start.items()}
        if "interpolation" in out:
            out["interpolation"] = min(1.0, out["interpolation"])
        return out
