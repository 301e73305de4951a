"""A schedule gives the composite weights of each round: ``values(round) -> {name: value}``.

Names are ``w_sim``, ``w_comp`` and ``interpolation``; ``start`` holds the agg config's values
(the values at round 0). Schedules are pure functions of the round, except ``adaptive``,
which also reads the aggregation statistics of past rounds through ``observe`` and keeps a
small state (``state_dict``) so that a resumed run continues identically.
"""

from typing import Dict


class Schedule:
    """Base class: constant values; subclasses override ``values`` (and ``observe``)."""

    name = "schedule"

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

    def __init__(self, start: Dict[str, float], rounds: int, end: Dict[str, float | None]):
        super().__init__(start, rounds)
        self.end = dict(end)

    def ease(self, fraction: float) -> float:
        """Share of the way covered when ``fraction`` of the run has elapsed."""
        raise NotImplementedError

    def values(self, round_index: int) -> Dict[str, float]:
        return ramp(self.start, self.end, self.ease(self.progress(round_index)))
