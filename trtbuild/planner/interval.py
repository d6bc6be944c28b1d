"""Interval DP over topological orders: parts are intervals of one order (O(n log n))."""

from __future__ import annotations

import heapq

from trtbuild.planner.problem import Problem


def topological_orders(problem: Problem) -> list[list[int]]:
    """A few topological orders: as exported, depth-first (finish a branch), breadth-first."""
    orders = [list(range(problem.n))]
    indeg = [len(p) for p in problem.preds]
    for pick in ("dfs", "bfs"):
        deg = list(indeg)
        heap = [(0, v) for v in range(problem.n) if deg[v] == 0]
        heapq.heapify(heap)
        order, counter = [], 0
        while heap:
            _, v = heapq.heappop(heap)
            order.append(v)
            for s in sorted(problem.succs[v]):
                deg[s] -= 1
                if deg[s] == 0:
                    counter += 1
                    heapq.heappush(heap, ((-counter if pick == "dfs" else counter), s))
        if order not in orders:
            orders.append(order)
    return orders


def interval_dp(problem: Problem, cap: int, order: list[int]) -> list[list[int]]:
    """Optimal split of `order` into contiguous feasible intervals, O(n log n).

    f(q') = min over feasible q of f(q) + sum of bytes of tensors made in [q, q') and read at or
    after q'. A lazy segment tree holds A[q] = f(q) + that sum while q' sweeps right.
    """
    n = problem.n
    pos = [0] * n
    for i, v in enumerate(order):
        pos[v] = i
    last = [-1] * n  # last reader position of each tensor made at position p (-1: none)
    closing: list[list[tuple[int, int]]] = [[] for _ in range(n + 1)]
    made_at: list[list[tuple[int, int]]] = [[] for _ in range(n)]
    for t, p in enumerate(problem.tensor_producer):
        if not problem.tensor_consumers[t]:
            continue
        lp = max(pos[c] for c in problem.tensor_consumers[t])
        made_at[pos[p]].append((lp, problem.tensor_bytes[t]))
        last[pos[p]] = max(last[pos[p]], lp)
    scale = (n + 2) * (n + 2)
    tree = _MinAddTree(n + 1)
    tree.assign(0, 0)
    count: dict[int, int] = {}
    window, lo = 0, 0
    choice = [0] * (n + 1)
    for q in range(1, n + 1):
        p = q - 1  # position entering the last part
        for w in problem.node_weights[order[p]]:
            count[w] = count.get(w, 0) + 1
            if count[w] == 1:
                window += problem.weight_bytes[w]
        while window > cap:
            for w in problem.node_weights[order[lo]]:
                count[w] -= 1
                if count[w] == 0:
                    window -= problem.weight_bytes[w]
            lo += 1
        for lp, b in made_at[p]:
            if lp >= q:  # read after this cut: charged for every start q0 <= p
                tree.add(0, p, b * scale)
                closing[lp].append((p, b))
        for p0, b in closing[q - 1] if q - 1 >= 0 else ():
            tree.add(0, p0, -b * scale)  # its last reader is now inside the part
        key = tree.query(lo, q - 1)
        start = key % (n + 2)
        choice[q] = start
        base = key - start
        tree.assign(q, base + (n + 2) + q)  # one more part; position q encoded for argmin
    parts = []
    q = n
    while q > 0:
        parts.append([order[i] for i in range(choice[q], q)])
        q = choice[q]
    parts.reverse()
    return parts


class _MinAddTree:
    """Range add, range min over positions 0..size-1 (lazy, iterative)."""

    INF = 1 << 200

    def __init__(self, size: int) -> None:
        self.h = max(1, (size - 1).bit_length())
        self.size = 1 << self.h
        self.t = [self.INF] * (2 * self.size)
        self.d = [0] * self.size

    def _apply(self, i: int, v: int) -> None:
        self.t[i] += v
        if i < self.size:
            self.d[i] += v

    def _build(self, i: int) -> None:
        t, d = self.t, self.d
        while i > 1:
            i >>= 1
            t[i] = min(t[2 * i], t[2 * i + 1]) + d[i]

    def _push(self, i: int) -> None:
        for s in range(self.h, 0, -1):
            j = i >> s
            if self.d[j]:
                self._apply(2 * j, self.d[j])
                self._apply(2 * j + 1, self.d[j])
                self.d[j] = 0

    def add(self, lo: int, hi: int, v: int) -> None:
        """Add v on [lo, hi] inclusive."""
        lo_, hi_ = lo + self.size, hi + 1 + self.size
        lo0, hi0 = lo_, hi_
        while lo_ < hi_:
            if lo_ & 1:
                self._apply(lo_, v)
                lo_ += 1
            if hi_ & 1:
                hi_ -= 1
                self._apply(hi_, v)
            lo_ >>= 1
            hi_ >>= 1
        self._build(lo0)
        self._build(hi0 - 1)

    def assign(self, i: int, v: int) -> None:
        i += self.size
        self._push(i)
        self.t[i] = v
        self._build(i)

    def query(self, lo: int, hi: int) -> int:
        lo_, hi_ = lo + self.size, hi + 1 + self.size
        self._push(lo_)
        self._push(hi_ - 1)
        res = self.INF
        while lo_ < hi_:
            if lo_ & 1:
                res = min(res, self.t[lo_])
                lo_ += 1
            if hi_ & 1:
                hi_ -= 1
                res = min(res, self.t[hi_])
            lo_ >>= 1
            hi_ >>= 1
        return res
