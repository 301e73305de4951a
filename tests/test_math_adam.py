"""Per-block Adam (federation/adam.py) against Adam's update written out by hand.

For one entry with gradient g at step t (1-based), from moments m, v:
m' = 0.9 m + 0.1 g, v' = 0.999 v + 0.001 g^2,
param' = param - lr * (m' / (1 - 0.9^t)) / (sqrt(v' / (1 - 0.999^t)) + 1e-8).
Both code paths are checked: PyTorch's fused kernel (used when present) and the manual fallback.
"""

import math

import pytest
import torch

from fedca.federation import adam
from fedca.federation.adam import RowAdam


def adam_entry(param, grads, steps, lr, weight_decay=0.0):
    """The scalar Adam recursion above over a list of (gradient, step number) pairs."""
    m = v = 0.0
    for g, t in zip(grads, steps):
        g = g + weight_decay * param
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        param = param - lr * (m / (1 - 0.9 ** t)) / (math.sqrt(v / (1 - 0.999 ** t)) + 1e-8)
    return param


def step_tensors(*numbers):
    return {n: torch.tensor(float(n)) for n in numbers}


@pytest.fixture(params=["fused", "manual"])
def path(request, monkeypatch):
    if request.param == "manual":
        monkeypatch.delattr(torch, "_fused_adam_", raising=False)
    elif not hasattr(torch, "_fused_adam_"):
        pytest.fail("this PyTorch has no _fused_adam_; the fused path cannot be checked")
    return request.param


def test_first_step_moves_each_entry_by_about_lr_against_its_gradient(path):
    param = torch.tensor([[1.0, -2.0], [0.5, 0.0]], dtype=torch.float64)
    optimizer = RowAdam(param, lr=0.01)
    grad = torch.tensor([[0.3, -4.0], [2.0, 1e-3]], dtype=torch.float64)
    optimizer.step(grad, [(0, 2, 1)], step_tensors(1))
    # t = 1: m / 0.1 = g and sqrt(v / 0.001) = |g|, so the move is lr * g / (|g| + 1e-8)
    expected = [[1.0 - 0.01 * 0.3 / (0.3 + 1e-8), -2.0 + 0.01 * 4.0 / (4.0 + 1e-8)],
                [0.5 - 0.01 * 2.0 / (2.0 + 1e-8), 0.0 - 0.01 * 1e-3 / (1e-3 + 1e-8)]]
    torch.testing.assert_close(param, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-15)
    # the moments to a few ulps: lerp and multiply-add round differently, and 1 - 0.999 is 0.001 + 9e-19
    torch.testing.assert_close(optimizer.exp_avg, 0.1 * grad, rtol=4e-15, atol=0)
    torch.testing.assert_close(optimizer.exp_avg_sq, 0.001 * grad * grad, rtol=4e-15, atol=0)


def test_rows_of_each_run_use_their_own_step_count_and_idle_rows_stay(path):
    param = torch.tensor([[1.0], [1.0], [1.0], [1.0]], dtype=torch.float64)
    optimizer = RowAdam(param, lr=0.1)
    grads = [torch.tensor([[0.5], [0.5], [9.0], [0.5]], dtype=torch.float64),
             torch.tensor([[-1.0], [0.25], [9.0], [2.0]], dtype=torch.float64)]
    # first update: rows 0-1 at step 1, row 3 at step 4 (a block that resumes later); row 2 idle
    optimizer.step(grads[0], [(0, 2, 1), (3, 4, 4)], step_tensors(1, 4))
    # second update: rows 0 and 1 at step 2, row 3 at step 5
    optimizer.step(grads[1], [(0, 2, 2), (3, 4, 5)], step_tensors(2, 5))
    expected = [adam_entry(1.0, [0.5, -1.0], [1, 2], 0.1), adam_entry(1.0, [0.5, 0.25], [1, 2], 0.1), 1.0,
                adam_entry(1.0, [0.5, 2.0], [4, 5], 0.1)]
    torch.testing.assert_close(param[:, 0], torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-14)
    assert float(optimizer.exp_avg[2, 0]) == 0.0 and float(optimizer.exp_avg_sq[2, 0]) == 0.0


def test_weight_decay_adds_the_scaled_parameter_to_the_gradient(path):
    param = torch.tensor([[2.0, -1.0]], dtype=torch.float64)
    optimizer = RowAdam(param, lr=0.05, weight_decay=0.5)
    for t, g in enumerate([0.1, -0.3, 0.2], start=1):
        optimizer.step(torch.full((1, 2), g, dtype=torch.float64), [(0, 1, t)], step_tensors(t))
    # entry 0 starts at 2 (decay term 1.0 dominates the gradient), entry 1 at -1
    expected = [adam_entry(2.0, [0.1, -0.3, 0.2], [1, 2, 3], 0.05, 0.5),
                adam_entry(-1.0, [0.1, -0.3, 0.2], [1, 2, 3], 0.05, 0.5)]
    torch.testing.assert_close(param[0], torch.tensor(expected, dtype=torch.float64), rtol=0, atol=1e-14)


def test_no_runs_change_nothing(path):
    param = torch.ones(2, 3)
    optimizer = RowAdam(param, lr=1.0)
    optimizer.step(torch.ones(2, 3), [], {})
    assert torch.equal(param, torch.ones(2, 3)) and torch.equal(optimizer.exp_avg, torch.zeros(2, 3))


def test_state_starts_at_zero_with_the_parameters_shape():
    param = torch.ones(3, 2, 2, dtype=torch.float32)
    optimizer = RowAdam(param, lr=0.5, weight_decay=0.25)
    assert optimizer.exp_avg.shape == (3, 2, 2) and optimizer.exp_avg_sq.dtype == torch.float32
    assert (optimizer.lr, optimizer.weight_decay, optimizer.param is param) == (0.5, 0.25, True)
    assert not bool(optimizer.exp_avg.any()) and not bool(optimizer.exp_avg_sq.any())


def test_the_constants_are_pytorchs_adam_defaults():
    assert (adam.BETA1, adam.BETA2, adam.EPS) == (0.9, 0.999, 1e-8)
