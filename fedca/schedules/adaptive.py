"""Adaptive schedule: shift weight between similarity and complementarity from what the server sees.

The FedCA paper names manual tuning of the two weights as its limitation. Complementarity is
what lets untrained item rows improve ("embedding skew"), so this rule gives it more of the
(fixed) total weight while the aggregated clients leave many rows untrained, and hands weight
back to similarity as their training covers the table. After each round the server measures

    u_t = mean over aggregated clients of the share of item rows with no training instance,

which the official server can compute (it receives each client's trained item ids; here the
per-item counts). With total = w_sim0 + w_comp0 and share_0 = w_comp0 / total:

    share_{t+1} = (1 - rate) * share_t + rate * u_t
    w_comp = clip(total * share, lo, hi),  w_sim = clip(total * (1 - share), lo, hi)

Deterministic given the statistics, always within [lo, hi], and its state (share) is saved
with checkpoints. Interpolation stays at its configured value.
"""

from dataclasses import dataclass

from fedca.config.fields import declared
from fedca.config.rules import require
from fedca.schedules.base import Schedule, ScheduleConfig


@dataclass
class AdaptiveScheduleConfig(ScheduleConfig):
    """adaptive: the weights follow the untrained-row share the server observes (module docstring)."""

    rate: float = declared(0.5, "how fast the share follows the observed untrained share", range="(0, 1]")
    min_weight: float = declared(0.0, "lower clip of each weight (at most max_weight)", range="[0, inf)")
    max_weight: float = declared(1.0, "upper clip of each weight")

    def check(self, scheduled):
        require({"w_sim", "w_comp"} <= set(scheduled), "schedule", "adaptive",
                f"moves w_sim and w_comp; the aggregator schedules {', '.join(scheduled)}")
        super().check(scheduled)
        require(self.min_weight <= self.max_weight, "schedule.min_weight", self.min_weight,
                f"must be in [0, schedule.max_weight={self.max_weight}]")


class AdaptiveSchedule(Schedule):
    """Weights follow the untrained-row share reported by the composite aggregator."""

    name = "adaptive"
    config = AdaptiveScheduleConfig

    @classmethod
    def from_config(cls, cfg, start, rounds):
        return cls(start, rounds, cfg.rate, cfg.min_weight, cfg.max_weight)

    def __init__(self, start, rounds, rate, lo, hi):
        super().__init__(start, rounds)
        self.rate, self.lo, self.hi = rate, lo, hi
        self.total = start["w_sim"] + start["w_comp"]
        self.share = start["w_comp"] / self.total if self.total else 0.5

    def _clip(self, value: float) -> float:
        return min(self.hi, max(self.lo, value))

    def values(self, round_index):
        return {**self.start, "w_comp": self._clip(self.total * self.share),
                "w_sim": self._clip(self.total * (1 - self.share))}

    def observe(self, round_index, stats):
        if "untrained_share" in stats:
            self.share = (1 - self.rate) * self.share + self.rate * float(stats["untrained_share"])

    def state_dict(self):
        return {"share": self.share}

    def load_state_dict(self, state):
        self.share = float(state["share"])
