"""Test-only generic QP solver: the per-client problem of the FedCA reference code, by SLSQP."""

import numpy as np
from scipy.optimize import minimize


def slsqp_simplex_qp(q: np.ndarray) -> np.ndarray:
    """argmin_x x^T x + q^T x  s.t.  x >= 0, sum(x) = 1 (what the reference solves with cvxpy)."""
    n = q.shape[0]
    result = minimize(
        lambda x: x @ x + q @ x,
        np.full(n, 1.0 / n),
        jac=lambda x: 2.0 * x + q,
        method="SLSQP",
        bounds=[(0.0, None)] * n,
        constraints=[{"type": "eq", "fun": lambda x: x.sum() - 1.0, "jac": lambda x: np.ones_like(x)}],
        options={"ftol": 1e-14, "maxiter": 1000},
    )
    assert result.status in (0, 8), result.message  # 8: line search stalled at machine precision
    return result.x
