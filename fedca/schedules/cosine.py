"""Cosine schedule: each value follows half a cosine from the agg config's value at the first
round to its ``end_*`` value at the last round (slow at both ends)."""

import math

from fedca.schedules.base import RampSchedule


class CosineSchedule(RampSchedule):
    """v(t) = v0 + (v1 - v0) * (1 - cos(pi * t / (rounds - 1))) / 2."""

    name = "cosine"

    def ease(self, fraction):
        return (1 - math.cos(math.pi * fraction)) / 2
