"""OpGraph: the model as plain data (ops, tensors, weights), the planner's input.

Built from a meta-device torch.export graph by a worker, shipped to the orchestrator as JSON.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from trtbuild.model.symbols import Symbols, size_text, symbol_names

if TYPE_CHECKING:
    import torch.fx
    from torch.export import ExportedProgram

WRAPPED = "model."
SKIPPED_TARGETS = ("_assert_tensor_metadata", "_assert_scalar", "sym_constrain_range")


@dataclass(frozen=True)
class TensorInfo:
    name: str
    shape: list[int | str]
    dtype: str
    bytes: int


CHECKPOINT, CODE = "checkpoint", "code"


@dataclass(frozen=True)
class WeightInfo:
    """A tensor the graph holds: from the checkpoint (parameters, persistent buffers), or from
    the model's code (non-persistent buffers its constructor makes, constants made in forward)."""

    name: str  # state-dict name in the user's model
    shape: list[int]
    dtype: str
    bytes: int
    origin: str = CHECKPOINT


@dataclass(frozen=True)
class Op:
    name: str
    target: str
    args: str  # canonical text of the arguments, tensors as %name
    inputs: list[str]  # tensor names (model inputs or other ops' outputs)
    weights: list[str]  # weight names
    outputs: list[TensorInfo]


@dataclass
class OpGraph:
    inputs: list[TensorInfo]
    outputs: list[str]
    weights: dict[str, WeightInfo]
    ops: list[Op]  # topological order
    interface: dict[str, Any] = field(default_factory=dict)  # binding.py: inputs, output structure
    _producer: dict[str, str] = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._producer = {t.name: op.name for op in self.ops for t in op.outputs}

    def producer(self, tensor: str) -> str | None:
        """The op that makes `tensor`, None for a model input."""
        return self._producer.get(tensor)

    def tensor(self, name: str) -> TensorInfo:
        for t in self.inputs:
            if t.name == name:
                return t
        op = self.op(self._producer[name])
        return next(t for t in op.outputs if t.name == name)

    def op(self, name: str) -> Op:
        return self._ops_by_name()[name]

    def _ops_by_name(self) -> dict[str, Op]:
        cached: dict[str, Op] | None = getattr(self, "_by_name", None)
        if cached is None:
            cached = {op.name: op for op in self.ops}
            self._by_name = cached
        return cached

    def to_json(self) -> dict[str, Any]:
        return {
            "inputs": [asdict(t) for t in self.inputs],
            "outputs": self.outputs,
            "weights": {k: asdict(w) for k, w in sorted(self.weights.items())},
            "ops": [asdict(op) for op in self.ops],
            **({"interface": self.interface} if self.interface else {}),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> OpGraph:
        return cls(
            inputs=[TensorInfo(**t) for t in data["inputs"]],
            outputs=list(data["outputs"]),
            weights={k: WeightInfo(**w) for k, w in data["weights"].items()},
            ops=[
                Op(**{**op, "outputs": [TensorInfo(**t) for t in op["outputs"]]})
                for op in data["ops"]
            ],
            interface=data.get("interface", {}),
        )

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True).encode()).hexdigest()


def _held_tensors(program: ExportedProgram) -> dict[str, str]:
    """Placeholder name -> exported FQN of every tensor the program holds (not an input)."""
    sig = program.graph_signature
    return {
        **sig.inputs_to_parameters,
        **sig.inputs_to_buffers,
        **sig.inputs_to_lifted_tensor_constants,
    }


def rename_map(
    program: ExportedProgram, input_names: list[str], outputs: dict[str, str] | None = None
) -> dict[str, str]:
    """Exported node names -> OpGraph names: the recipe's input names, state-dict names, and the
    model outputs' names (`outputs`, binding.py)."""
    held = _held_tensors(program)
    rename = {k: v.removeprefix(WRAPPED) for k, v in held.items()}
    user = [n for n in program.graph.nodes if n.op == "placeholder" and n.name not in held]
    rename.update({n.name: name for n, name in zip(user, input_names)})
    return {**rename, **(outputs or {})}


def from_exported(
    program: ExportedProgram, input_names: list[str], names: dict[str, str] | None = None
) -> OpGraph:
    """Flatten an exported program into an OpGraph; getitem nodes fold into their producer.

    Its outputs are the distinct tensors the model returns that ops compute (not a passed-through
    input, not a buffer's new value), named by `names` (exported node name -> output name)."""
    sig = program.graph_signature
    held = _held_tensors(program)
    from_code = {*sig.non_persistent_buffers, *sig.inputs_to_lifted_tensor_constants.values()}
    rename = rename_map(program, input_names, names)
    placeholders = [n for n in program.graph.nodes if n.op == "placeholder"]
    users = [n for n in placeholders if n.name not in held]
    symbols = symbol_names(users, input_names)
    inputs = [
        _tensor_info(rename[n.name], n.meta["val"], symbols)
        for n in placeholders
        if n.name not in held
    ]
    weights: dict[str, WeightInfo] = {}
    for node in placeholders:
        if node.name in held:
            name, val = rename[node.name], node.meta["val"]
            origin = CODE if held[node.name] in from_code else CHECKPOINT
            weights[name] = WeightInfo(
                name, [int(d) for d in val.shape], _dtype(val), _nbytes(val), origin
            )
    ops = [_op(node, rename, weights, symbols) for node in _compute_nodes(program.graph)]
    produced = {t.name for op in ops for t in op.outputs}
    outputs = list(dict.fromkeys(n for n in _user_outputs(program, rename) if n in produced))
    ops = live_ops(ops, outputs)
    used = {w for op in ops for w in op.weights}
    return OpGraph(inputs, outputs, {k: v for k, v in weights.items() if k in used}, ops)


def _user_outputs(program: ExportedProgram, rename: dict[str, str]) -> list[str]:
    from torch.export.graph_signature import OutputKind

    specs = program.graph_signature.output_specs
    args = [s.arg for s in specs if s.kind == OutputKind.USER_OUTPUT]
    return [rename.get(a.name, a.name) for a in args if hasattr(a, "name")]


def live_ops(ops: list[Op], outputs: list[str]) -> list[Op]:
    """The ops the outputs depend on. A model may compute what the recipe does not ask for
    (ViT's pooler when `outputs` picks last_hidden_state): a part of such ops has no outputs."""
    needed, keep = set(outputs), []
    for op in reversed(ops):
        if any(t.name in needed for t in op.outputs):
            keep.append(op)
            needed.update(op.inputs)
    return keep[::-1]


def _compute_nodes(graph: torch.fx.Graph) -> list[torch.fx.Node]:
    import operator

    out = []
    for node in graph.nodes:
        if node.op != "call_function" or node.target is operator.getitem:
            continue
        if any(s in str(node.target) for s in SKIPPED_TARGETS) and not node.users:
            continue
        out.append(node)
    return out


def _op(
    node: torch.fx.Node, rename: dict[str, str], weights: dict[str, WeightInfo], symbols: Symbols
) -> Op:
    import operator

    val = node.meta.get("val")
    if isinstance(val, (tuple, list)):
        outputs = [
            _tensor_info(rename.get(user.name, user.name), user.meta["val"], symbols)
            for user in node.users
            if user.target is operator.getitem and user.meta.get("val") is not None
        ]
    else:
        outputs = (
            [_tensor_info(rename.get(node.name, node.name), val, symbols)]
            if val is not None
            else []
        )
    inputs: list[str] = []
    used_weights: list[str] = []
    for arg in node.all_input_nodes:
        name = rename.get(arg.name, arg.name)
        (used_weights if name in weights else inputs).append(name)
    return Op(
        node.name,
        str(node.target),
        _canonical(node.args, rename) + _canonical(node.kwargs, rename),
        list(dict.fromkeys(inputs)),
        list(dict.fromkeys(used_weights)),
        outputs,
    )


def _canonical(value: Any, rename: dict[str, str]) -> str:
    import torch.fx

    if isinstance(value, torch.fx.Node):
        held = value.graph.owning_module
        sub = getattr(held, str(value.target), None) if value.op == "get_attr" else None
        if isinstance(sub, torch.fx.GraphModule):  # a control-flow op's branch: its code counts
            return "%" + value.name + "{" + sub.code + "}"
        return "%" + rename.get(value.name, value.name)
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_canonical(v, rename) for v in value) + "]"
    if isinstance(value, dict):
        return (
            "{" + ",".join(f"{k}={_canonical(v, rename)}" for k, v in sorted(value.items())) + "}"
        )
    return repr(value)


SYMINT = "symint"  # a symbolic size (aten.sym_size): no bytes; recomputed from a tensor's shape


def _tensor_info(name: str, val: Any, symbols: Symbols) -> TensorInfo:
    if not hasattr(val, "shape"):  # SymInt of a dynamic dimension
        return TensorInfo(name, [size_text(val, symbols)], SYMINT, 0)
    shape = [int(d) if _concrete(d) else size_text(d, symbols) for d in val.shape]
    return TensorInfo(name, shape, _dtype(val), _nbytes(val))


def _concrete(dim: Any) -> bool:
    """A plain int. (Never int() a SymInt: that guards on, and so specialises, the dimension.)"""
    return isinstance(dim, int)


def _nbytes(val: Any) -> int:
    """Bytes at the shape the example (opt) input gives; symbolic dims take their hint."""
    count = 1
    for d in val.shape:
        count *= _hint(d)
    return count * val.element_size()


def _hint(dim: Any) -> int:
    node = getattr(dim, "node", None)
    if node is not None:
        hint = node.hint
        return int(hint) if hint is not None else 1
    return int(dim)


def _dtype(val: Any) -> str:
    return str(val.dtype).removeprefix("torch.")
