"""Coarsening merges only what no optimal plan cuts: checked against the uncoarsened optimum."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trtbuild.model.graph import Op, OpGraph, TensorInfo, WeightInfo
from trtbuild.planner import coarsen, problem_of, solve


def op(name: str, inputs: list[str], size: int, weights: list[str] = []) -> Op:  # noqa: B006
    return Op(name, "aten.whatever.default", "", inputs, list(weights), [tensor(name, size)])


def tensor(name: str, size: int) -> TensorInfo:
    return TensorInfo(name, [size], "uint8", size)


def graph_of(ops: list[Op], weights: dict[str, int]) -> OpGraph:
    infos = {w: WeightInfo(w, [b], "uint8", b) for w, b in weights.items()}
    return OpGraph([tensor("x", 8)], [ops[-1].name], infos, ops)


def test_merges_by_structure_and_size_not_by_name() -> None:
    ops = [
        op("conv", ["x"], 100, ["w_conv"]),
        op("bn", ["conv"], 100, ["w_bn"]),  # has weights: stays its own node
        op("relu", ["bn"], 100),  # weightless, same size, sole reader: joins bn
        op("expand", ["relu"], 400),  # grows: a cut after it would cost more, so it may be cut
        op("sum", ["expand"], 4),  # shrinks: joins expand
        op("fork_a", ["sum"], 4),  # sum is read twice: neither reader joins it
        op("fork_b", ["sum"], 4),
        op("addmm", ["fork_a", "fork_b"], 4),  # two producers
    ]
    graph = graph_of(ops, {"w_conv": 1000, "w_bn": 10})
    assert coarsen(graph) == [
        ["conv"],
        ["bn", "relu"],
        ["expand", "sum"],
        ["fork_a"],
        ["fork_b"],
        ["addmm"],
    ]


@st.composite
def graphs(draw: st.DrawFn) -> tuple[OpGraph, int]:
    n = draw(st.integers(2, 11))
    ops: list[Op] = []
    weights: dict[str, int] = {}
    for i in range(n):
        names = ["x"] + [o.name for o in ops]
        if i and draw(st.booleans()):  # a chain step: one producer, often a sole reader
            inputs = [names[draw(st.integers(max(1, len(names) - 2), len(names) - 1))]]
        else:
            inputs = draw(st.lists(st.sampled_from(names), min_size=1, max_size=3, unique=True))
        held = []
        if draw(st.integers(0, 2)) == 0:
            held = [f"w{i}"]
            weights[held[0]] = draw(st.integers(1, 60))
        ops.append(op(f"op{i}", inputs, draw(st.integers(1, 100)), held))
    graph = graph_of(ops, weights)
    heaviest = max(weights.values(), default=0)
    return graph, draw(st.integers(max(heaviest, 1), max(heaviest, sum(weights.values()), 1)))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(graphs())
def test_coarsening_keeps_the_optimum(case: tuple[OpGraph, int]) -> None:
    graph, cap = case
    fine = problem_of(graph, [[o.name] for o in graph.ops])
    coarse = problem_of(graph, coarsen(graph))
    assert coarse.n <= fine.n
    # both small enough for the exact DP over ideals
    assert solve(coarse, cap).cost == solve(fine, cap).cost
