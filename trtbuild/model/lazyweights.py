"""Part ONNX initializers as lazy tensors: each weight is loaded (checkpoint slice, seeded init or a
code constant), cast to the part's dtype, when the ONNX file is written, one at a time."""

from __future__ import annotations

from typing import Any

import torch

from trtbuild.errors import TrtbuildError
from trtbuild.model.graph import WeightInfo


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype an OpGraph names ("float32", "int64", "uint8", ...)."""
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise TrtbuildError(f"unknown tensor dtype {name!r} in the model graph")
    return dtype


def meta_tensor(info: WeightInfo) -> torch.Tensor:
    return torch.empty(info.shape, dtype=torch_dtype(info.dtype), device="meta")


class WeightLoader:
    """Loads one weight at a time, in the part's precision, and remembers what it loaded."""

    def __init__(
        self, source: Any, dtypes: dict[str, torch.dtype], constants: dict[str, torch.Tensor]
    ) -> None:
        self.source, self.dtypes, self.constants = source, dtypes, constants
        if source.checkpoint is not None:  # parts are exported one after another: count anew
            source.checkpoint.opened.clear()
        self.loaded: set[str] = set()
        self.bytes_loaded = 0

    def __call__(self, name: str) -> torch.Tensor:
        """A checkpoint tensor from its file (or seeded init); a code constant as the code made it."""
        made = self.constants.get(name)
        tensor = made if made is not None else self.source.load([name])[name]
        tensor = tensor.to(self.dtypes[name]).contiguous()
        self.loaded.add(name)
        self.bytes_loaded += tensor.numel() * tensor.element_size()
        return tensor

    def files_opened(self) -> list[str]:
        """The checkpoint files this part read (a sharded checkpoint: only its shards)."""
        checkpoint = self.source.checkpoint
        if checkpoint is None:
            return []
        root = checkpoint.path if checkpoint.path.is_dir() else checkpoint.path.parent
        return sorted(str(f.relative_to(root)) for f in checkpoint.opened)


def attach_lazy_weights(model: Any, loader: WeightLoader) -> int:
    import onnx_ir as ir
    from torch.onnx._internal.exporter._core import TorchTensor

    count = 0
    for init_name, value in model.graph.initializers.items():
        name = weight_name(init_name)
        if name not in loader.dtypes:
            tensor = getattr(value.const_value, "raw", None)
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                raise TrtbuildError(f"ONNX initializer {init_name!r} has no weight source")
            continue

        def load(name: str = name, init_name: str = init_name) -> Any:
            return TorchTensor(loader(name), name=init_name)

        value.const_value = ir.LazyTensor(
            load, dtype=value.dtype, shape=value.shape, name=init_name
        )
        count += 1
    return count


def attr_name(weight: str) -> str:
    return "w__" + weight.replace(".", "__")


def weight_name(attr: str) -> str:
    return attr.removeprefix("w__").replace("__", ".")
