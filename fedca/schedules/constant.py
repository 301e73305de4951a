"""Constant schedule: the composite weights and interpolation keep their configured values."""

from fedca.schedules.base import Schedule


class ConstantSchedule(Schedule):
    """``values(round)`` is the agg config's values every round."""

    name = "constant"
