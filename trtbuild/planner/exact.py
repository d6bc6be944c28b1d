"""Exact DP over ideals (predecessor-closed node sets), while a graph has few of them."""

from __future__ import annotations

from collections.abc import Callable
from operator import add, or_
from typing import cast

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
    weight = _weigher(problem)

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


def _weigher(problem: Problem) -> Callable[[int], int]:
    """weight(mask): bytes of the weights the nodes in `mask` hold (a weight two of them share
    counts once), memoised per problem: the plan's shrink loop solves one problem at several caps.

    Bits are read a byte at a time through tables (the union of the nodes' weight masks, then the
    sum of the weights' bytes, for each of the 256 values of each byte): the DP asks for 10^5
    masks (GPT-2 small: 1.5 s of planning before, bit by bit).
    """
    cached = getattr(problem, "_weigher", None)
    if cached is not None:
        return cast(Callable[[int], int], cached)
    node_masks = _byte_tables([sum(1 << w for w in ws) for ws in problem.node_weights], or_)
    weight_sums = _byte_tables(problem.weight_bytes, add)
    memo: dict[int, int] = {}

    def weight(mask: int) -> int:
        found = memo.get(mask)
        if found is not None:
            return found
        held, rest = 0, mask
        for table in node_masks:
            held |= table[rest & 255]
            rest >>= 8
            if not rest:
                break
        total = 0
        for table in weight_sums:
            total += table[held & 255]
            held >>= 8
            if not held:
                break
        memo[mask] = total
        return total

    problem._weigher = weight  # type: ignore[attr-defined]
    return weight


def _byte_tables(values: list[int], combine: Callable[[int, int], int]) -> list[list[int]]:
    """For each byte k of a mask over `values`: table[b] combines values[8k + i] over the bits i
    set in b (b = 0..255)."""
    tables = []
    for start in range(0, len(values), 8):
        chunk = values[start : start + 8]
        table = [0] * 256
        for b in range(1, 256):
            low = (b & -b).bit_length() - 1
            table[b] = combine(table[b & (b - 1)], chunk[low] if low < len(chunk) else 0)
        tables.append(table)
    return tables


def _bits(mask: int) -> list[int]:
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out
