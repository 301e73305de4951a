"""Linear schedule: each value moves in a straight line from the agg config's value at the
first round to its ``end_*`` value at the last round."""

from fedca.schedules.base import RampSchedule


class LinearSchedule(RampSchedule):
    """v(t) = v0 + (v1 - v0) * t / (rounds - 1)."""

    name = "linear"

    def ease(self, fraction):
        return fraction
