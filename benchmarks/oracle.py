"""An exact oracle for small graphs: the planning problem as a MILP (scipy.optimize.milp / HiGHS).

Independent of the planner's DP: x[v, k] = 1 when node v is in the first k+1 parts (an ideal),
so parts are chain-of-ideals by construction; c[t] = 1 when tensor t is read across a cut.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from trtbuild.planner import Problem


def optimum(problem: Problem, cap: int) -> int | None:
    """Fewest boundary bytes over every chain of feasible parts; None if none is feasible."""
    n, k_max = problem.n, problem.n
    weights = sorted({w for ws in problem.node_weights for w in ws})
    widx = {w: i for i, w in enumerate(weights)}
    nx_, nz, nt = n * k_max, len(weights) * k_max, len(problem.tensor_bytes)

    def x(v: int, k: int) -> int:
        return v * k_max + k

    def z(w: int, k: int) -> int:
        return nx_ + widx[w] * k_max + k

    def c(t: int) -> int:
        return nx_ + nz + t

    size = nx_ + nz + nt
    rows: list[tuple[dict[int, float], float, float]] = []
    for v in range(n):
        for k in range(k_max - 1):
            rows.append(({x(v, k): 1, x(v, k + 1): -1}, -np.inf, 0))  # ideals grow
        rows.append(({x(v, k_max - 1): 1}, 1, 1))  # everything placed
    for u, v in problem.edges:
        for k in range(k_max):
            rows.append(({x(v, k): 1, x(u, k): -1}, -np.inf, 0))  # predecessor-closed
    for v in range(n):
        for w in problem.node_weights[v]:
            for k in range(k_max):
                coeffs = {z(w, k): 1, x(v, k): -1}
                if k:
                    coeffs[x(v, k - 1)] = 1
                rows.append((coeffs, 0, np.inf))  # z >= membership of v in part k
    for k in range(k_max):
        rows.append(({z(w, k): problem.weight_bytes[w] for w in weights}, -np.inf, cap))
    for t, p in enumerate(problem.tensor_producer):
        for cons in problem.tensor_consumers[t]:
            for k in range(k_max):
                rows.append(({c(t): 1, x(p, k): -1, x(cons, k): 1}, 0, np.inf))
    matrix = np.zeros((len(rows), size))
    lo, hi = np.empty(len(rows)), np.empty(len(rows))
    for i, (coeffs, low, high) in enumerate(rows):
        for j, value in coeffs.items():
            matrix[i, j] += value
        lo[i], hi[i] = low, high
    objective = np.zeros(size)
    for t, b in enumerate(problem.tensor_bytes):
        objective[c(t)] = b
    result = milp(
        objective,
        constraints=LinearConstraint(matrix, lo, hi),
        integrality=np.ones(size),
        bounds=Bounds(0, 1),
    )
    if not result.success:
        return None
    return round(result.fun)
