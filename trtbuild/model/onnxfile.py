"""An ONNX file from elsewhere, read as untrusted input: its graph without its weights, and each
initializer's bytes streamed from where its external data says, never from outside its folder.

External data follows the ONNX format (onnx/docs/ExternalData.md): a tensor with
`data_location = EXTERNAL` names a `location` relative to the model's folder, an `offset` and a
`length` in bytes. trtbuild refuses a location that leaves the folder (`../`, an absolute path, a
link leading out) and data shorter than its tensor, in one error naming the tensor and the file.
No process reads a whole model: initializers are copied in chunks of CHUNK bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from trtbuild.errors import TrtbuildError

CHUNK = 4 << 20  # bytes copied or hashed at a time


def load_graph(path: Path) -> Any:
    """The ModelProto at `path` without its external data (initializers hold only their
    metadata), every external location checked (see module docstring).

    Raises TrtbuildError naming `path` for a missing, truncated or malformed file, or a bad
    external-data reference."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(str(path), load_external_data=False)
    except FileNotFoundError:
        raise TrtbuildError(f"{path}: ONNX file not found") from None
    except (DecodeError, RuntimeWarning, ValueError, OSError) as exc:
        raise TrtbuildError(
            f"{path}: not a readable ONNX model (truncated or malformed protobuf: {exc})"
        ) from None
    if not model.graph.node:
        raise TrtbuildError(f"{path}: not a readable ONNX model (its graph has no nodes)")
    for tensor in all_tensors(model):
        if is_external(tensor):
            external_region(tensor, path.parent)
    return model


def all_tensors(model: Any) -> Iterator[Any]:
    """Every TensorProto of the model: initializers and attribute tensors, subgraphs included."""

    def of_graph(graph: Any) -> Iterator[Any]:
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                if attr.HasField("t"):
                    yield attr.t
                yield from attr.tensors
                if attr.HasField("g"):
                    yield from of_graph(attr.g)
                for sub in attr.graphs:
                    yield from of_graph(sub)

    yield from of_graph(model.graph)


def is_external(tensor: Any) -> bool:
    import onnx

    return bool(tensor.data_location == onnx.TensorProto.EXTERNAL)


def tensor_nbytes(tensor: Any) -> int:
    """Bytes of a tensor from its metadata: dims x element size (sub-byte types packed)."""
    import onnx

    count = 1
    for d in tensor.dims:
        count *= int(d)
    bits = _BITS.get(tensor.data_type)
    if bits is not None:
        return (count * bits + 7) // 8
    itemsize = onnx.helper.tensor_dtype_to_np_dtype(tensor.data_type).itemsize
    return int(count * itemsize)


_BITS = {22: 4, 21: 4, 23: 4, 25: 2, 26: 2}  # INT4, UINT4, FLOAT4E2M1, UINT2, INT2 (onnx.proto)


def external_region(tensor: Any, folder: Path) -> tuple[Path, int, int]:
    """(file, offset, length) of an external tensor, checked: inside `folder` (links resolved),
    and the file holds offset + length bytes, length being the tensor's size."""
    info = {entry.key: entry.value for entry in tensor.external_data}
    location = info.get("location", "")
    where = f"initializer {tensor.name!r}: external data location {location!r}"
    if not location or os.path.isabs(location) or ".." in Path(location).parts:
        raise TrtbuildError(f"{folder}: {where} is not a file inside the model's folder")
    root = folder.resolve()
    file = (folder / location).resolve()
    if not file.is_relative_to(root):
        raise TrtbuildError(f"{folder}: {where} leads outside the model's folder (to {file})")
    if not file.is_file():
        raise TrtbuildError(f"{folder}: {where}: no such file")
    offset = int(info.get("offset", 0) or 0)
    expected = tensor_nbytes(tensor)
    length = int(info.get("length", expected) or expected)
    if length != expected:
        raise TrtbuildError(
            f"{file}: {where}: length {length} bytes, but the tensor's shape and dtype take {expected}"
        )
    size = file.stat().st_size
    if offset + length > size:
        raise TrtbuildError(
            f"{file}: {where}: the file is {size} bytes, shorter than the tensor's "
            f"{length} bytes at offset {offset} (truncated external data)"
        )
    return file, offset, length


def tensor_chunks(tensor: Any, folder: Path) -> Iterator[bytes]:
    """The tensor's raw little-endian bytes (as ONNX's raw_data holds them), CHUNK at a time."""
    if is_external(tensor):
        file, offset, length = external_region(tensor, folder)
        with open(file, "rb") as f:
            f.seek(offset)
            while length > 0:
                block = f.read(min(CHUNK, length))
                if not block:
                    raise TrtbuildError(f"{file}: initializer {tensor.name!r}: file ended early")
                length -= len(block)
                yield block
        return
    if tensor.HasField("raw_data"):
        yield tensor.raw_data
        return
    from onnx import numpy_helper

    yield numpy_helper.to_array(tensor).tobytes()


def tensor_digest(tensor: Any, folder: Path) -> str:
    """sha256 of a tensor's dtype, shape and bytes, streamed."""
    h = hashlib.sha256(json.dumps([int(tensor.data_type), [int(d) for d in tensor.dims]]).encode())
    for block in tensor_chunks(tensor, folder):
        h.update(block)
    return h.hexdigest()


def external_files(model: Any, folder: Path) -> list[Path]:
    """The external-data files the model's tensors read, sorted."""
    return sorted({external_region(t, folder)[0] for t in all_tensors(model) if is_external(t)})
