"""`[model.check]`: how a target's engines are checked against their model (trtbuild.orchestrate.check).

Tolerances apply per output: `rel_l2` = ||engine - reference|| / ||reference|| (L2 over the
whole tensor); `atol` and `rtol`, when given, also hold elementwise: |a - b| <= atol + rtol |ref|,
and an output whose every difference is within `atol` passes whatever its rel_l2 (a reference
that is zero up to rounding). A non-finite engine value where the reference is finite always fails.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from trtbuild.errors import TrtbuildError

# rel_l2 by precision, measured on recipes/ and tests/data (see tests/test_check.py): fp32 engines
# of ONNX Runtime stay under 1e-5 (fusions reorder sums); half precisions round every activation.
# Quantized targets round every weight and (int8, fp8) every activation the calibration covers.
# Measured (tests/test_quantize.py): int8 0.009-0.011 on small CNNs and the seed network (minmax,
# entropy, percentile alike), 0.028 on a random 4-layer MLP of 2048/4096 and a random GPT-2;
# int4 0.073 on that GPT-2's logits, 0.155 on the MLP; fp8 (TensorRT only) is not measured
# here: E4M3 keeps 3 mantissa bits, so twice int8's allowance.
DEFAULT_REL_L2 = {
    "fp32": 1e-4,
    "fp16": 1e-2,
    "bf16": 5e-2,
    "int8": 5e-2,
    "int4": 0.2,
    "fp8": 0.1,
}


class Tolerance(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rel_l2: float | None = Field(None, gt=0)
    atol: float | None = Field(None, ge=0)
    rtol: float | None = Field(None, ge=0)


class CheckSpec(Tolerance):
    """[model.check]: enabled, seed, data (a glob of .npz samples), tolerances, per-output ones."""

    enabled: bool = True
    seed: int = 0
    data: str | None = None  # "samples/*.npz", relative to the recipe: one sample per file
    outputs: dict[str, Tolerance] = Field(default_factory=dict)


def tolerances(spec: CheckSpec, precision: str, outputs: list[str]) -> dict[str, dict[str, Any]]:
    """Per model output: {"rel_l2": float, "atol": float | None, "rtol": float | None}.

    Raises TrtbuildError for a tolerance of an output the model does not have (a typo would
    otherwise loosen nothing and say nothing)."""
    unknown = sorted(set(spec.outputs) - set(outputs))
    if unknown:
        raise TrtbuildError(
            f"field 'check.outputs.{unknown[0]}': the model has no output {unknown[0]!r} "
            f"(its outputs: {', '.join(outputs)})"
        )
    out = {}
    for name in outputs:
        own = spec.outputs.get(name, Tolerance())
        rel = own.rel_l2 or spec.rel_l2 or DEFAULT_REL_L2[precision]
        atol = own.atol if own.atol is not None else spec.atol
        rtol = own.rtol if own.rtol is not None else spec.rtol
        out[name] = {"rel_l2": rel, "atol": atol, "rtol": rtol}
    return out
