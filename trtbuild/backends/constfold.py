"""Values a part's ONNX computes from constants alone, folded into weights before it is quantized
(build process side, no torch).

The exporter (optimize=False) writes some weights as small constant subgraphs: a convolution
without a bias gets a zero bias, Expand(CastLike(0.0, x), [channels]). The quantizers take only
an initializer as a weight, and trtbuild.backends.quantize leaves a node with a float input the
calibration has no range for at fp32: every such convolution (all of ResNet's) stayed at fp32.
"""

from __future__ import annotations

from pathlib import Path


def fold_constants(onnx_path: Path, folded: Path) -> Path:
    """`onnx_path`, or a copy at `folded` (its weights in `folded.name + ".data"`) where every
    value computed from constants alone is a weight of the same name (onnxscript's constant
    folding), and the nodes nothing reads any more are gone. Other values keep their names, so
    the calibration table still names them."""
    import onnx

    if not _computes_constants(onnx.load(str(onnx_path), load_external_data=False)):
        return onnx_path
    import onnx_ir as ir
    from onnx_ir.passes.common import RemoveUnusedNodesPass
    from onnxscript.optimizer import fold_constants as fold

    model = ir.load(str(onnx_path))
    fold(model)
    RemoveUnusedNodesPass()(model)
    ir.save(model, str(folded), external_data=folded.name + ".data")
    return folded


def _computes_constants(model: object) -> bool:
    """Whether a node other than a Constant reads only weights and constants (and so outputs a
    constant); a graph input or any computed activation among its inputs makes it not one."""
    graph = model.graph  # type: ignore[attr-defined]
    constant = {i.name for i in graph.initializer} | {""}  # "": an omitted optional input
    for node in graph.node:
        if node.op_type == "Constant":
            constant.update(node.output)
        elif node.input and all(name in constant for name in node.input):
            return True
    return False
