"""exact_mean: the recorded means do not depend on the order the values are held in."""

import math

import torch

from fedca.metrics.means import exact_mean


def test_every_order_of_the_same_values_gives_the_same_mean():
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(4099, generator=generator, dtype=torch.float64) * torch.logspace(-8, 8, 4099,
                                                                                       dtype=torch.float64)
    means = {exact_mean(values[torch.randperm(values.numel(), generator=generator)]) for _ in range(20)}
    assert means == {math.fsum(values.tolist()) / values.numel()}


def test_cancelling_values_are_summed_exactly():
    # a naive float64 left-to-right sum of these gives 0.0; the exact sum is 2
    values = torch.tensor([1e100, 1.0, -1e100, 1.0], dtype=torch.float64)
    assert exact_mean(values) == 0.5


def test_integer_bool_and_float32_inputs_and_the_empty_tensor():
    assert exact_mean(torch.tensor([[1, 2], [3, 6]])) == 3.0
    assert exact_mean(torch.tensor([True, False, False, False])) == 0.25
    assert exact_mean(torch.tensor([0.1, 0.2], dtype=torch.float32)) == (float(torch.tensor(0.1)) + float(torch.tensor(0.2))) / 2
    assert math.isnan(exact_mean(torch.empty(0)))
