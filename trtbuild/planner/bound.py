"""A certificate for a plan: a lower bound on the boundary bytes of every feasible plan.

The plan itself always comes from solve.py (deterministic: an incremental build plans exactly as
a clean one). This module only proves how good it is, with the planning problem as a MILP solved
by HiGHS (scipy.optimize.milp) under a time limit: its dual bound is a valid lower bound whenever
it stops, and the optimum when it finishes. Exact DP plans are optimal by construction and skip it.

Formulation over K part slots: x[v, k] = 1 when node v is in the first k + 1 parts (an ideal:
x grows with k and is predecessor-closed); c[t] = 1 when tensor t is read outside its producer's
part; minimise sum bytes[t] c[t]. Part k holds x[v, k] - x[v, k - 1] of node v: a weight only v
holds counts in its capacity row through that difference, and only a weight several nodes share
gets a variable z[w, k] = 1 when part k holds it (HiGHS proves BERT at 1/3 of its weights 3x
faster without a z per weight). Fixed before solving, from weights alone: a node whose ancestors
weigh more than k + 1 parts can hold is in none of the first k + 1 parts (x[v, k] = 0), and one
whose descendants weigh more than the K - k - 1 slots after k can hold is placed by slot k.

K slots suffice: in a plan with the fewest bytes, and then the fewest parts, no two neighbouring
parts fit the cap together (merging them would keep it feasible, predecessor-closed and no
costlier, with one part less), so P_i and P_i+1 hold more than `cap` between them and, pairing
them up, K <= 2 * floor(S / cap) + 1 where S = sum over nodes of each node's own weight bytes.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from trtbuild.planner.problem import Problem

if TYPE_CHECKING:
    from scipy.optimize import LinearConstraint

MAX_VARIABLES = 200_000  # past this the model alone takes longer to build than the time allowed
MAX_FIXING_NODES = 3_000  # ancestor and descendant sets as bit masks: n^2 bits


@dataclass(frozen=True)
class Bound:
    lower_bytes: int  # no feasible plan moves fewer bytes across boundaries
    proven: bool  # the MILP finished: lower_bytes is the optimum
    seconds: float
    method: str  # "milp", "milp-time-limit", "too-large", "trivial"


def lower_bound(problem: Problem, cap: int, seconds: float) -> Bound:
    """The best lower bound HiGHS proves within `seconds` (0 when the model is too large)."""
    start = time.perf_counter()
    total = sum(problem.weight_of([v]) for v in range(problem.n))
    if problem.weight_of(range(problem.n)) <= cap or not problem.tensor_bytes:
        return Bound(0, True, 0.0, "trivial")  # one part: nothing crosses
    slots = min(problem.n, 2 * (total // max(cap, 1)) + 1)
    holders = Counter(w for ws in problem.node_weights for w in ws)
    weights = sorted(w for w, count in holders.items() if count > 1)
    size = problem.n * slots + len(weights) * slots + len(problem.tensor_bytes)
    if size > MAX_VARIABLES or seconds <= 0:
        return Bound(0, False, time.perf_counter() - start, "too-large")
    from scipy.optimize import Bounds, milp  # SciPy's HiGHS: imported only when there is a proof

    model = _Model(problem, cap, slots, weights)
    result = milp(
        model.objective(),
        constraints=model.constraints(),
        integrality=np.ones(model.size),
        bounds=Bounds(*model.fixed()),
        # mip_rel_gap 0: HiGHS's default stops within 1e-4 of the optimum, and a bound is only
        # a certificate if it is the dual bound itself, not the incumbent
        options={"time_limit": seconds, "presolve": True, "mip_rel_gap": 0.0},
    )
    elapsed = time.perf_counter() - start
    dual = getattr(result, "mip_dual_bound", None)
    lower = 0 if dual is None or not np.isfinite(dual) else max(0, int(np.ceil(dual - 1e-6)))
    if result.status == 0 and result.fun is not None and lower >= round(result.fun):
        return Bound(lower, True, elapsed, "milp")
    return Bound(lower, False, elapsed, "milp-time-limit")


class _Model:
    """Rows of the MILP, built sparse (see the module docstring for the variables)."""

    def __init__(self, problem: Problem, cap: int, slots: int, weights: list[int]) -> None:
        self.problem, self.cap, self.slots = problem, cap, slots
        self.widx = {w: i for i, w in enumerate(weights)}  # shared weights only
        self.own = [
            sum(problem.weight_bytes[w] for w in ws if w not in self.widx)
            for ws in problem.node_weights
        ]
        self.nx = problem.n * slots
        self.nz = len(weights) * slots
        self.size = self.nx + self.nz + len(problem.tensor_bytes)
        self.rows: list[int] = []
        self.cols: list[int] = []
        self.vals: list[float] = []
        self.lo: list[float] = []
        self.hi: list[float] = []

    def x(self, v: int, k: int) -> int:
        return v * self.slots + k

    def z(self, w: int, k: int) -> int:
        return self.nx + self.widx[w] * self.slots + k

    def c(self, t: int) -> int:
        return self.nx + self.nz + t

    def _row(self, coeffs: dict[int, float], low: float, high: float) -> None:
        index = len(self.lo)
        for col, value in coeffs.items():
            self.rows.append(index)
            self.cols.append(col)
            self.vals.append(value)
        self.lo.append(low)
        self.hi.append(high)

    def fixed(self) -> tuple[np.ndarray, np.ndarray]:
        """Variable bounds: 0..1, with x fixed where weights alone decide (module docstring)."""
        low, high = np.zeros(self.size), np.ones(self.size)
        p = self.problem
        if p.n > MAX_FIXING_NODES:
            return low, high
        own = np.array(self.own, dtype=np.float64)  # shared weights left out: an under-count
        for v, (before, after) in enumerate(zip(_closure(p.preds), _closure(p.succs, down=True))):
            ancestors, descendants = float(own @ before), float(own @ after)
            for k in range(self.slots):
                if ancestors > (k + 1) * self.cap:
                    high[self.x(v, k)] = 0
                if descendants > (self.slots - 1 - k) * self.cap:
                    low[self.x(v, k)] = 1
        return low, high

    def objective(self) -> np.ndarray:
        out = np.zeros(self.size)
        for t, b in enumerate(self.problem.tensor_bytes):
            out[self.c(t)] = b
        return out

    def constraints(self) -> LinearConstraint:
        from scipy.optimize import LinearConstraint
        from scipy.sparse import coo_matrix

        p, last = self.problem, self.slots - 1
        for v in range(p.n):
            for k in range(last):
                self._row({self.x(v, k): 1, self.x(v, k + 1): -1}, -np.inf, 0)  # ideals grow
            self._row({self.x(v, last): 1}, 1, 1)  # everything placed
        for u, v in p.edges:
            for k in range(self.slots):
                self._row({self.x(v, k): 1, self.x(u, k): -1}, -np.inf, 0)  # closed
        for v in range(p.n):
            for w in p.node_weights[v] & self.widx.keys():
                for k in range(self.slots):
                    coeffs = {self.z(w, k): 1.0, self.x(v, k): -1.0}
                    if k:
                        coeffs[self.x(v, k - 1)] = 1.0
                    self._row(coeffs, 0, np.inf)  # part k holds w if it holds v
        for k in range(self.slots):
            capacity = {self.z(w, k): float(p.weight_bytes[w]) for w in self.widx}
            for v in range(p.n):
                if self.own[v]:
                    capacity[self.x(v, k)] = float(self.own[v])
                    if k:
                        capacity[self.x(v, k - 1)] = -float(self.own[v])
            self._row(capacity, -np.inf, self.cap)
        for t, producer in enumerate(p.tensor_producer):
            for reader in p.tensor_consumers[t]:
                for k in range(self.slots):  # producer placed by slot k, reader not yet
                    self._row(
                        {self.c(t): 1, self.x(producer, k): -1, self.x(reader, k): 1}, 0, np.inf
                    )
        matrix = coo_matrix((self.vals, (self.rows, self.cols)), shape=(len(self.lo), self.size))
        return LinearConstraint(matrix.tocsr(), np.array(self.lo), np.array(self.hi))


def _closure(neighbours: list[set[int]], down: bool = False) -> list[np.ndarray]:
    """Each node with all its ancestors (or descendants) as a 0/1 vector; nodes in topological order."""
    n = len(neighbours)
    masks = [0] * n
    for v in reversed(range(n)) if down else range(n):
        mask = 1 << v
        for u in neighbours[v]:
            mask |= masks[u]
        masks[v] = mask
    width = (n + 7) // 8
    return [
        np.unpackbits(np.frombuffer(m.to_bytes(width, "little"), np.uint8), bitorder="little")[:n]
        for m in masks
    ]
