"""Exact DP over ideals (predecessor-closed node sets), while a graph has few of them."""

from __future__ import annotations

from trtbuild.planner.problem import Problem, Solution

EXACT_IDEALS_CAP = 800  # exact DP over ideals while a graph has at most this many


def ideals(problem: Problem, limit: int) -> list[int] | None:
    """Every ideal as a bitmask, by size; None when there are more than `limit`."""
    missing = [len(p) for p in problem.preds]
    start = frozenset(v for v in range(problem.n) if missing[v] == 0)
    seen = {0}
    stack: list[tuple[int, frozenset[int]]] = [(0, start)]
    while stack:
        ideal, ready = stack.pop()
        for v in ready:
            grown = ideal | 1 << v
            if grown in seen:
                continue
            seen.add(grown)
            if len(seen) > limit:
                return None
            unlocked = {
                s for s in problem.succs[v] if all(grown >> u & 1 for u in problem.preds[s])
            }
            stack.append((grown, (ready - {v}) | unlocked))
    return sorted(seen, key=lambda m: (m.bit_count(), m))


def exact(problem: Problem, cap: int, ideals: list[int]) -> Solution:
    """best[I] = min over sub-ideals J with I \\ J feasible of best[J] + charge(J, I)."""
    n = problem.n
    consumers_mask = [sum(1 << c for c in cons) for cons in problem.tensor_consumers]
    weight = problem.mask_weight

    INF = (1 << 62, 0)
    best: dict[int, tuple[int, int]] = {0: (0, 0)}
    back: dict[int, int] = {}
    for ideal in ideals[1:]:
        frontier = [
            (1 << p, b)
            for p, b, cm in zip(problem.tensor_producer, problem.tensor_bytes, consumers_mask)
            if ideal >> p & 1 and cm & ~ideal
        ]
        choice, value = -1, INF
        for sub in _sub_ideals(ideal, ideals, best):
            part = ideal & ~sub
            if weight(part) > cap:
                continue
            cost, count = best[sub]
            cost += sum(b for bit, b in frontier if not sub & bit)
            if (cost, count + 1) < value:
                choice, value = sub, (cost, count + 1)
        if choice >= 0:
            best[ideal], back[ideal] = value, choice
    full = (1 << n) - 1
    parts = []
    cur = full
    while cur:
        prev = back[cur]
        parts.append(sorted(_bits(cur & ~prev)))
        cur = prev
    parts.reverse()
    return Solution(parts, best[full][0], "exact")


def _sub_ideals(ideal: int, ideals: list[int], best: dict[int, tuple[int, int]]) -> list[int]:
    """Proper sub-ideals of `ideal` already solved: by submask walk or by scan, whichever is less."""
    if 1 << ideal.bit_count() <= len(ideals):
        subs, sub = [], (ideal - 1) & ideal
        while True:
            if sub in best:
                subs.append(sub)
            if sub == 0:
                return subs
            sub = (sub - 1) & ideal
    size = ideal.bit_count()
    return [s for s in ideals if s.bit_count() < size and not s & ~ideal and s in best]


def _bits(mask: int) -> list[int]:
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out
