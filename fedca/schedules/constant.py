"""Constant schedule: the composite weights and interpolation keep their configured values."""

from typing import Dict


class ConstantSchedule:
    """``values(round) -> {name: value}``, the same every round."""

    name = "constant"

    def __init__(self, values: Dict[str, float]):
        self._values = dict(values)

    def values(self, round_index: int) -> Dict[str, float]:
        return dict(self._values)
