"""Step schedule: the listed values are multiplied by ``gamma`` at every milestone round passed."""

from fedca.schedules.base import Schedule


class StepSchedule(Schedule):
    """v(t) = v0 * gamma ** (number of milestones <= t + 1), for the keys in ``keys``;
    milestones are 1-based round numbers as written in rounds.csv. Interpolation is capped at 1."""

    name = "step"

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
