"""Tests for fedca.aggregators.simplex: batched Euclidean projection onto the probability simplex."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fedca.aggregators.simplex import project_rows_to_simplex
from qp_reference import slsqp_simplex_qp


def _fedca_style_vectors(rng: np.random.Generator, m: int) -> np.ndarray:
    """``[m, m]`` rows a*C_i - b*S_i + p, as in FedCA's weight step (C in [-1, 1], S in [-1, 0))."""
    complementarity = rng.uniform(-1.0, 1.0, size=(m, m))
    similarity = -rng.uniform(0.0, 1.0, size=(m, m)) - 1e-12
    p = rng.dirichlet(np.ones(m))
    a, b = rng.uniform(0.0, 1.0, size=2)
    return a * complementarity - b * similarity + p


@pytest.mark.slow  # ~30 s of SLSQP solves
def test_projection_matches_slsqp_qp_on_fedca_style_instances():
    rng = np.random.default_rng(20240603)
    worst = 0.0
    for _ in range(200):
        m = int(rng.integers(2, 31))
        vectors = _fedca_style_vectors(rng, m)
        projected = project_rows_to_simplex(torch.from_numpy(vectors)).numpy()
        for i in range(m):
            reference = slsqp_simplex_qp(-2.0 * vectors[i])
            worst = max(worst, float(np.abs(projected[i] - reference).max()))
    assert worst <= 1e-6


def test_projected_rows_lie_on_the_simplex():
    generator = torch.Generator().manual_seed(0)
    v = 3.0 * torch.randn(50, 17, generator=generator, dtype=torch.float64)
    x = project_rows_to_simplex(v)
    assert x.shape == v.shape
    assert bool((x >= 0).all())
    torch.testing.assert_close(x.sum(dim=1), torch.ones(50, dtype=torch.float64), rtol=0, atol=1e-12)


def test_point_on_simplex_is_unchanged():
    generator = torch.Generator().manual_seed(1)
    points = torch.rand(8, 12, generator=generator, dtype=torch.float64)
    points[:, :3] = 0.0
    points = points / points.sum(dim=1, keepdim=True)
    vertex = torch.zeros(1, 12, dtype=torch.float64)
    vertex[0, 5] = 1.0
    points = torch.cat([points, vertex])
    torch.testing.assert_close(project_rows_to_simplex(points), points, rtol=0, atol=1e-15)


def test_projection_is_the_shift_and_clip_of_the_closed_form():
    v = torch.tensor([[0.5, 0.5, 0.5], [2.0, 0.0, -1.0], [0.2, 0.1, -0.8]], dtype=torch.float64)
    expected = torch.tensor([[1 / 3, 1 / 3, 1 / 3], [1.0, 0.0, 0.0], [0.55, 0.45, 0.0]], dtype=torch.float64)
    torch.testing.assert_close(project_rows_to_simplex(v), expected, rtol=0, atol=1e-14)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtype_is_preserved(dtype):
    v = torch.randn(4, 6, generator=torch.Generator().manual_seed(2)).to(dtype)
    assert project_rows_to_simplex(v).dtype == dtype


@pytest.mark.parametrize(
    "bad",
    [torch.zeros(5), torch.zeros(2, 3, 4), torch.zeros(3, 0), torch.zeros(3, 3, dtype=torch.int64)],
    ids=["1-d", "3-d", "no-columns", "integer"],
)
def test_invalid_input_raises_value_error(bad):
    with pytest.raises(ValueError):
        project_rows_to_simplex(bad)


def test_a_float32_row_is_projected_in_float64():
    # v = (1e8, 0.5, 0.25, -1e8) is exact in float32. The projection is (1, 0, 0, 0): tau = 1e8 - 1,
    # which float64 holds exactly; in float32 (spacing 8 at 1e8) tau rounds to 1e8 and the row
    # would project to all zeros.
    v = torch.tensor([[1e8, 0.5, 0.25, -1e8]], dtype=torch.float32)
    assert project_rows_to_simplex(v).tolist() == [[1.0, 0.0, 0.0, 0.0]]
