"""Cosine schedule: each value follows half a cosine from the agg config's value at the first
round to its ``end_*`` value at the last round (slow at both ends)."""

import math

from fedca.schedules.base import Schedule, ramp


class CosineSchedule(Schedule):
    """v(t) = v0 + (v1 - v0) * (1 - cos(pi * t / (rounds - 1))) / 2."""

    name = "cosine"

    def __init__(self, start, rounds, end):
        super().__init__(start, rounds)
        self.end = dict(end)

    def values(self, round_index):
        return ramp(self.start, self.end, (1 - math.cos(math.pi * self.progress(round_index))) / 2)
