"""The planner's abstract problem: nodes in a topological order, tensors, weights; a solution."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import add, or_


@dataclass
class Problem:
    """The planner's view of a graph: nodes in a topological order, tensors, weights.

    node i holds weights `node_weights[i]` (ids into `weight_bytes`); tensor j is produced by
    `tensor_producer[j]`, is `tensor_bytes[j]` bytes, and is read by nodes `tensor_consumers[j]`.
    """

    n: int
    edges: list[tuple[int, int]]
    node_weights: list[frozenset[int]]
    weight_bytes: list[int]
    tensor_producer: list[int]
    tensor_bytes: list[int]
    tensor_consumers: list[frozenset[int]]
    labels: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.preds: list[set[int]] = [set() for _ in range(self.n)]
        self.succs: list[set[int]] = [set() for _ in range(self.n)]
        for u, v in self.edges:
            self.preds[v].add(u)
            self.succs[u].add(v)
        self.produced: list[list[int]] = [[] for _ in range(self.n)]
        for t, p in enumerate(self.tensor_producer):
            self.produced[p].append(t)
        self._mask_tables: tuple[list[list[int]], list[list[int]]] | None = None
        self._mask_weights: dict[int, int] = {}

    def weight_of(self, nodes: Sequence[int] | set[int] | frozenset[int]) -> int:
        ids: set[int] = set()
        for v in nodes:
            ids.update(self.node_weights[v])
        return sum(self.weight_bytes[w] for w in ids)

    def mask_weight(self, mask: int) -> int:
        """weight_of the nodes whose bits are set in `mask`, memoised: the exact DP asks for 10^5
        masks, and the plan's shrink loop solves one problem at several caps.

        Bits are read a byte at a time through tables (the union of the nodes' weight masks,
        then the sum of the weights' bytes, for each of the 256 values of each byte): bit by bit,
        GPT-2 small's plan took 1.5 s; this way 0.15 s.
        """
        found = self._mask_weights.get(mask)
        if found is not None:
            return found
        if self._mask_tables is None:
            node_masks = [sum(1 << w for w in ws) for ws in self.node_weights]
            self._mask_tables = (
                _byte_tables(node_masks, or_),
                _byte_tables(self.weight_bytes, add),
            )
        node_tables, weight_tables = self._mask_tables
        held, rest = 0, mask
        for table in node_tables:
            held |= table[rest & 255]
            rest >>= 8
            if not rest:
                break
        total = 0
        for table in weight_tables:
            total += table[held & 255]
            held >>= 8
            if not held:
                break
        self._mask_weights[mask] = total
        return total

    def cost(self, parts: Sequence[Sequence[int]]) -> int:
        """Boundary bytes: each tensor read by a part other than its producer's, once."""
        where = {v: k for k, part in enumerate(parts) for v in part}
        return sum(
            b
            for p, b, cons in zip(self.tensor_producer, self.tensor_bytes, self.tensor_consumers)
            if any(where[c] != where[p] for c in cons)
        )

    def is_chain_of_ideals(self, parts: Sequence[Sequence[int]]) -> bool:
        where = {v: k for k, part in enumerate(parts) for v in part}
        if sorted(where) != list(range(self.n)) or sum(len(p) for p in parts) != self.n:
            return False
        return all(where[u] <= where[v] for u, v in self.edges)


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


@dataclass
class Solution:
    parts: list[list[int]]
    cost: int
    method: str


class TooBig(Exception):
    """One node alone holds more weight bytes than a part may."""

    def __init__(self, node: int) -> None:
        super().__init__(node)
        self.node = node
