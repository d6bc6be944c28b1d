"""The planner's abstract problem: nodes in a topological order, tensors, weights; a solution."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field


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

    def weight_of(self, nodes: Sequence[int] | set[int] | frozenset[int]) -> int:
        ids: set[int] = set()
        for v in nodes:
            ids.update(self.node_weights[v])
        return sum(self.weight_bytes[w] for w in ids)

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
