"""Linear schedule: each value moves in a straight line from the agg config's value at the
first round to its ``end_*`` value at the last round."""

from fedca.schedules.base import Schedule, ramp


class LinearSchedule(Schedule):
    """v(t) = v0 + (v1 - v0) * t / (rounds - 1)."""

    name = "linear"

    def __init__(self, start, rounds, end):
        super().__init__(start, rounds)
        self.end = dict(end)

    def values(self, round_index):
        return ramp(self.start, self.end, self.progress(round_index))
