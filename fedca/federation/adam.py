"""Adam over contiguous row blocks that each carry their own step counter.

A fresh Adam per client per round (docs/methods/local_training.md §Adam) equals one Adam over the stacked
tensors only if every client's bias correction uses its own step count and idle clients are
left untouched. Clients with equal step counts that sit next to each other in training order
form one *run*; each call updates a list of runs with the fused kernel when PyTorch has it.
"""

from typing import List, Sequence, Tuple

import torch

BETA1, BETA2, EPS = 0.9, 0.999, 1e-8

Run = Tuple[int, int, int]  # (first row, end row, step number after this update)


def _manual_adam(params, grads, exp_avgs, exp_avg_sqs, steps, lr, weight_decay):
    for param, grad, exp_avg, exp_avg_sq, step in zip(params, grads, exp_avgs, exp_avg_sqs, steps):
        if weight_decay:
            grad = grad.add(param, alpha=weight_decay)
        step = float(step)
        exp_avg.lerp_(grad, 1 - BETA1)
        exp_avg_sq.mul_(BETA2).addcmul_(grad, grad, value=1 - BETA2)
        denom = (exp_avg_sq.sqrt() / (1 - BETA2 ** step) ** 0.5).add_(EPS)
        param.addcdiv_(exp_avg, denom, value=-lr / (1 - BETA1 ** step))


class RowAdam:
    """Adam state for one parameter tensor whose rows are grouped into per-client blocks.

    param [R, ...] is updated in place; exp_avg and exp_avg_sq have its shape and start at zero.
    """

    def __init__(self, param: torch.Tensor, lr: float, weight_decay: float = 0.0):
        self.param = param
        self.lr = lr
        self.weight_decay = weight_decay
        self.exp_avg = torch.zeros_like(param)
        self.exp_avg_sq = torch.zeros_like(param)

    def step(self, grad: torch.Tensor, runs: Sequence[Run], step_tensors: dict) -> None:
        """Update rows [first, end) of every run with ``grad`` (rows aligned with ``param``)."""
        if not runs:
            return
        views: List[list] = [[], [], [], [], []]
        for first, end, step in runs:
            for bucket, tensor in zip(views, (self.param, grad, self.exp_avg, self.exp_avg_sq)):
                bucket.append(tensor[first:end])
            views[4].append(step_tensors[step])
        params, grads, exp_avgs, exp_avg_sqs, steps = views
        if hasattr(torch, "_fused_adam_"):
            torch._fused_adam_(params, grads, exp_avgs, exp_avg_sqs, [], steps, lr=self.lr, beta1=BETA1,
                               beta2=BETA2, weight_decay=self.weight_decay, eps=EPS, amsgrad=False,
                               maximize=False)
        else:
            _manual_adam(params, grads, exp_avgs, exp_avg_sqs, steps, self.lr, self.weight_decay)
