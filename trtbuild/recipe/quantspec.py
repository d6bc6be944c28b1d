"""Quantized precisions and `[model.calibration]`: what a recipe says about int8, int4 and fp8.

    [model.calibration]
    data = "calib/*.npz"   # files of named input arrays (one sample per file), relative to the
                           # recipe; or "random": seeded normal inputs (ranges of no real data)
    samples = 256          # at most this many samples (files in sorted order)
    method = "minmax"      # "minmax" | "entropy" | "percentile"

int8 (static: weights and activations) needs a calibration; int4 is weight-only (blocked
MatMul/Gemm weights, no calibration); fp8 is TensorRT only (Q/DQ in E4M3, calibrated as int8).
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

QUANTIZED = ("int8", "int4", "fp8")  # precisions built from an fp32 graph by a quantizer
CALIBRATED = ("int8", "fp8")  # precisions whose activation ranges come from calibration data
RANDOM = "random"
# An engine's weight bytes against the fp32 weights it was made from: int8 and fp8 1 byte per
# weight (+ a scale per channel); int4 half a byte + an fp32 scale per block of 128 (0.133),
# measured 0.153 on a GPT-2 with its graph (tests/test_quantize.py).
ENGINE_SHARE = {"int8": 0.25, "fp8": 0.25, "int4": 0.16}


class CalibrationSpec(BaseModel):
    """[model.calibration]: where the activation ranges of int8 / fp8 targets come from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: str = Field(min_length=1)  # a glob of .npz files relative to the recipe, or "random"
    samples: int = Field(256, ge=1)
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    seed: int = 0  # of data = "random"

    @property
    def random(self) -> bool:
        return self.data == RANDOM


# keep = { fp32 = ["*.norm*", "lm_head"] }: modules (globs over the names of the modules that
# hold an op's weights) whose ops a quantized target leaves at fp32.
Keep = dict[Literal["fp32"], list[str]]


def unsupported_keep(model: str, precisions: list[str], keep: Keep) -> str | None:
    """The error for `keep` with a precision it does not apply to yet (fp16, bf16), or None."""
    cast = [p for p in precisions if p in ("fp16", "bf16")]
    if not keep.get("fp32") or not cast:
        return None
    return (
        f"model '{model}': field 'keep' applies to int8, int4 and fp8 targets (left out of "
        f"quantization); precision {cast[0]!r} cannot keep layers at fp32 yet"
    )


def missing_calibration(model: str, precisions: list[str], has: bool) -> str | None:
    """The error for a model with a calibrated precision and no [model.calibration], or None."""
    needs = [p for p in precisions if p in CALIBRATED]
    if not needs or has:
        return None
    return (
        f"model '{model}': precision {needs[0]!r} needs field 'calibration' ([model.calibration] "
        'with data = "calib/*.npz" or "random", samples, method), got none'
    )
