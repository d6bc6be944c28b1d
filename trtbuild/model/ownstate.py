"""A model's own weights: its state after its factory ran, for a recipe that names no `weights`.

Worker side (imports torch). The factory runs once with real parameters, torch's generator
seeded with 0 (so a factory that only initialises is reproducible), and whatever it loaded or
initialised is written, tensor after tensor, as one safetensors file (checkpoint names as
`weights.checkpoint_names` gives them, a tied tensor once under its first name) with a sha256
per tensor as `checkpoint.safetensors_digests` computes them. Parts then stream their slices from
that file as from any safetensors checkpoint.

Memory: the process cost, the model's weights, and whatever the factory holds while it builds
them (a `torch.load`ed checkpoint: about the weights again), so about fixed + 2x the weights.
Writing adds no copy: each tensor's bytes go to the file from the tensor itself.
"""

from __future__ import annotations

import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trtbuild.errors import TrtbuildError
from trtbuild.model import frontend
from trtbuild.recipe.load import Recipe
from trtbuild.recipe.schema import ModelSpec

SAFETENSORS_DTYPES = {
    torch.float64: "F64",
    torch.float32: "F32",
    torch.float16: "F16",
    torch.bfloat16: "BF16",
    torch.int64: "I64",
    torch.int32: "I32",
    torch.int16: "I16",
    torch.int8: "I8",
    torch.uint8: "U8",
    torch.bool: "BOOL",
}


def own_model(recipe: Recipe, spec: ModelSpec) -> nn.Module:
    """The user's model as its factory returns it, with real parameters, torch seeded with 0.

    TrtbuildError naming the model's source if the factory raises or returns no nn.Module.
    """
    return frontend.make_model(recipe, spec)


def own_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Checkpoint name -> tensor, every tied tensor once (its first name), detached."""
    seen: set[int] = set()
    out = {}
    for name, tensor in model.state_dict(keep_vars=True).items():
        if id(tensor) in seen:
            continue
        seen.add(id(tensor))
        if tensor.is_meta:
            raise TrtbuildError(
                f"the model's tensor {name!r} is on the meta device after its factory ran: "
                "it has no value to build with; name the checkpoint in the recipe's `weights`"
            )
        out[name] = tensor.detach()
    return out


def write_state(recipe: Recipe, spec: ModelSpec, out: Path) -> dict[str, Any]:
    """Run the factory and write its state to `out` (safetensors).

    Returns {"digests": name -> sha256, "bytes": total tensor bytes}.
    """
    state = own_state(own_model(recipe, spec))
    header: dict[str, Any] = {}
    offset = 0
    for name, tensor in state.items():
        if tensor.dtype not in SAFETENSORS_DTYPES:
            raise TrtbuildError(
                f"model '{spec.name}': tensor {name!r} has dtype {tensor.dtype}, which a "
                "safetensors file cannot hold; name a checkpoint in the recipe's `weights`"
            )
        size = tensor.numel() * tensor.element_size()
        header[name] = {
            "dtype": SAFETENSORS_DTYPES[tensor.dtype],
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + size],
        }
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    digests = {}
    with open(out, "wb") as handle:
        handle.write(struct.pack("<Q", len(raw)))
        handle.write(raw)
        for name, tensor in state.items():
            info = header[name]
            digest = hashlib.sha256(json.dumps([info["dtype"], info["shape"]]).encode())
            data = _bytes_of(tensor)
            digest.update(data)
            handle.write(data)
            digests[name] = digest.hexdigest()
    return {"digests": dict(sorted(digests.items())), "bytes": offset}


def _bytes_of(tensor: torch.Tensor) -> memoryview:
    """The tensor's bytes in C order, without a copy when it is contiguous already."""
    flat = tensor.contiguous().reshape(-1)
    return flat.view(torch.uint8).numpy().data if flat.numel() else memoryview(b"")
