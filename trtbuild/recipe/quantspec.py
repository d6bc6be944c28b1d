"""Quantized precisions and `[model.calibration]`: what a recipe says about int8, int4 and fp8.

    [model.calibration]
    data = "calib/*.npz"   # files of named input arrays (one sample per file), relative to the
                           # recipe; or "calib.py:samples": a function (file relative to the
                           # recipe) whose iterator yields dicts of input name -> array or tensor;
                           # or "random": seeded normal inputs (ranges of no real data)
    samples = 256          # at most this many samples (files in sorted order)
    method = "minmax"      # "minmax" | "entropy" | "percentile"

int8 (static: weights and activations) needs a calibration; int4 is weight-only (blocked
MatMul/Gemm weights, no calibration); fp8 is TensorRT only (Q/DQ in E4M3, calibrated as int8).
"""

from __future__ import annotations

import re
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

    data: str = Field(min_length=1)  # a glob of .npz files, "file.py:function" or "random"
    samples: int = Field(256, ge=1)
    method: Literal["minmax", "entropy", "percentile"] = "minmax"
    seed: int = 0  # of data = "random"

    @property
    def random(self) -> bool:
        return self.data == RANDOM

    @property
    def generator(self) -> bool:
        """Whether `data` names a Python function yielding the samples ("calib.py:samples")."""
        return GENERATOR.match(self.data) is not None


GENERATOR = re.compile(r"^[^*?\[:]+\.py:[A-Za-z_][A-Za-z0-9_]*$")


# keep = { fp32 = ["*.norm*", "lm_head"] }: modules (globs over the names of the modules that
# hold an op's weights) whose ops a quantized or fp16 target leaves at fp32.
Keep = dict[Literal["fp32"], list[str]]
KEEPS = (*QUANTIZED, "fp16")  # precisions `keep` and `precision_search` apply to


def mixed(precision: str, keep: Keep, search: bool) -> bool:
    """Whether an fp16 target is exported at fp32 and converted part by part, its kept modules
    left at fp32 (trtbuild.backends.quantize): when it keeps modules or may search for them."""
    return precision == "fp16" and (bool(keep.get("fp32")) or search)


def unsupported_keep(
    model: str, precisions: list[str], keep: Keep, search: bool, onnx: bool
) -> str | None:
    """The error for `keep` or `precision_search` where they do not apply, or None: bf16 (ONNX
    Runtime's converter writes fp16 only) and models from ONNX files (no module names)."""
    field = "keep" if keep.get("fp32") else "precision_search" if search else None
    if field is None:
        return None
    if onnx:
        return (
            f"model '{model}': field {field!r} needs a model from Python (its module names); "
            "an ONNX source has none"
        )
    if "bf16" in precisions:
        return (
            f"model '{model}': field {field!r} applies to {', '.join(KEEPS)} targets; "
            "precision 'bf16' cannot keep layers at fp32 yet"
        )
    return None


def missing_calibration(model: str, precisions: list[str], has: bool) -> str | None:
    """The error for a model with a calibrated precision and no [model.calibration], or None."""
    needs = [p for p in precisions if p in CALIBRATED]
    if not needs or has:
        return None
    return (
        f"model '{model}': precision {needs[0]!r} needs field 'calibration' ([model.calibration] "
        'with data = "calib/*.npz" or "random", samples, method), got none'
    )
