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


def kkt_simplex_qp(q: np.ndarray, margin: float = 1e-9) -> np.ndarray:
    """The same QP solved to rounding: SLSQP finds the support, then the KKT system on it,
    [[2 I, 1], [1^T, 0]] [x; lam] = [-q; 1], gives x exactly, and the KKT conditions certify it
    (x > 0 on the support; 2 x_j + q_j + lam >= 0 off it, up to ``margin``, SLSQP's own accuracy)."""
    support = slsqp_simplex_qp(q) > margin
    size = int(support.sum())
    system = np.zeros((size + 1, size + 1))
    system[:size, :size] = 2.0 * np.eye(size)
    system[:size, size] = system[size, :size] = 1.0
    solution = np.linalg.solve(system, np.concatenate([-q[support], [1.0]]))
    x = np.zeros_like(q)
    x[support] = solution[:size]
    multiplier = solution[size]
    assert (x[support] > 0).all(), "the support SLSQP found is not optimal"
    assert (q[~support] + multiplier >= -margin).all(), "an entry off the support should be positive"
    return x
