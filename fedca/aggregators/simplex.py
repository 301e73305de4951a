"""Batched Euclidean projection onto the probability simplex (docs/methods/simplex.md).

The projection of ``v`` onto ``{x : x >= 0, sum(x) = 1}`` is ``max(v - tau, 0)`` for one scalar
threshold ``tau`` per row, found from the descending sort of the row. It replaces the per-row
QP solves (``cvxpy``) of pFedGraph, FedSaC and FedCA: there the QP ``min x^T x + q^T x`` over the
simplex has the closed form ``x = project(-q / 2)``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def project_rows_to_simplex(v: Tensor) -> Tensor:
    """Euclidean projection of every row of ``v`` onto the probability simplex.

    Args:
        v: ``[m, n]`` floating tensor, one vector per row.

    Returns:
        ``[m, n]`` tensor in ``v``'s dtype and device; every row is non-negative and sums to 1.

    Computed in float64 with the sort-based algorithm: sort each row descending into ``s``, take
    prefix sums ``c_r``, let ``rho`` be the largest ``r`` (1-based) with ``s_r - (c_r - 1) / r > 0``
    (``r = 1`` always qualifies), ``tau = (c_rho - 1) / rho`` and ``x = max(v - tau, 0)``.

    Raises:
        ValueError: ``v`` is not 2-D, has no columns, or is not a floating tensor.
    """
    if v.dim() != 2:
        raise ValueError(f"project_rows_to_simplex expects a 2-D tensor [m, n], got shape {tuple(v.shape)}")
    if v.shape[1] == 0:
        raise ValueError("project_rows_to_simplex needs at least one column (n >= 1)")
    if not v.is_floating_point():
        raise ValueError(f"project_rows_to_simplex expects a floating tensor, got {v.dtype}")
    x = v.to(torch.float64)
    s = torch.sort(x, dim=1, descending=True).values
    c = torch.cumsum(s, dim=1)
    r = torch.arange(1, x.shape[1] + 1, dtype=torch.float64, device=x.device)
    positive = s - (c - 1.0) / r > 0
    # Largest qualifying r; in exact arithmetic the mask is a prefix, so this equals its row sum.
    rho = torch.where(positive, r, torch.zeros_like(r)).amax(dim=1).to(torch.int64)  # [m]
    tau = (c.gather(1, (rho - 1).unsqueeze(1)) - 1.0) / rho.unsqueeze(1).to(torch.float64)  # [m, 1]
    return torch.clamp(x - tau, min=0.0).to(v.dtype)
