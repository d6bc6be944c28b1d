"""A Triton model repository from built targets: one model per part, an ensemble wiring them.

Pipeline: the lock (which targets, built for which device) -> each target's engine.json (parts and
the tensors they pass) -> each engine's own declaration of its inputs and outputs (dtypes, dims)
-> a config.pbtxt and a version folder per model -> swapped into the repository one model at a
time, from files staged beside it, so Triton never loads half a model.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trtbuild.backends import EngineIO, backend_class
from trtbuild.cache import atomic
from trtbuild.cache.store import Store
from trtbuild.errors import TrtbuildError
from trtbuild.recipe.load import Recipe
from trtbuild.recipe.schema import DynamicShape, InputSpec
from trtbuild.release import lockfile
from trtbuild.release.lockfile import LockedTarget

TYPES = {
    "bool": "TYPE_BOOL",
    "uint8": "TYPE_UINT8",
    "int8": "TYPE_INT8",
    "int16": "TYPE_INT16",
    "int32": "TYPE_INT32",
    "int64": "TYPE_INT64",
    "float16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "float32": "TYPE_FP32",
    "float64": "TYPE_FP64",
}
MARK = "# written by trtbuild deploy"  # only folders whose config starts so are ever removed


@dataclass(frozen=True)
class Platform:
    platform: str
    filename: str  # Triton's default_model_filename
    kind: str  # instance_group kind
    sidecars: bool  # whether the engine's sidecar files are needed to run it


PLATFORMS = {
    "onnxruntime": Platform("onnxruntime_onnx", "model.onnx", "KIND_CPU", sidecars=True),
    "tensorrt": Platform("tensorrt_plan", "model.plan", "KIND_GPU", sidecars=False),
}


class Enum(str):
    """A protobuf enum value (TYPE_FP32): written bare, not quoted."""


@dataclass(frozen=True)
class Message:
    fields: list[tuple[str, Any]]


@dataclass(frozen=True)
class TritonModel:
    name: str
    platform: str  # a Triton platform: onnxruntime_onnx, tensorrt_plan or ensemble
    config: str  # config.pbtxt
    files: dict[str, str]  # file in the version folder "1/" -> sha256 of its blob in the cache


def pbtxt(message: Message, indent: int = 0) -> str:
    """Protobuf text format: scalars, enums, lists of numbers, messages and repeated messages."""
    pad = "  " * indent
    lines = []
    for key, value in message.fields:
        if isinstance(value, Message):
            lines.append(f"{pad}{key} {{\n{pbtxt(value, indent + 1)}{pad}}}")
        elif isinstance(value, list) and value and isinstance(value[0], Message):
            blocks = ",\n".join(f"{pad}  {{\n{pbtxt(v, indent + 2)}{pad}  }}" for v in value)
            lines.append(f"{pad}{key} [\n{blocks}\n{pad}]")
        elif isinstance(value, list):
            lines.append(f"{pad}{key}: [ {', '.join(_scalar(v) for v in value)} ]")
        else:
            lines.append(f"{pad}{key}: {_scalar(value)}")
    return "".join(line + "\n" for line in lines)


def _scalar(value: Any) -> str:
    if isinstance(value, Enum):
        return str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    return json.dumps(str(value))  # names here are ASCII: JSON's escapes are text format's


def model_name(target: LockedTarget) -> str:
    """The ensemble (or plain model) of a target; its parts are <name>_part<i>."""
    return f"{target.model}_{target.slot.replace('@', '_')}"


def max_batch_size(inputs: list[InputSpec], ios: list[EngineIO]) -> int:
    """Triton batches along dim 0 when every model input's dim 0 is dynamic and, in every engine,
    every tensor's dim 0 is one and the same dynamic dimension (each part is exported on its own,
    so its symbols are its own); else 0, and dims include the batch."""

    def batched(spec: InputSpec) -> bool:
        return isinstance(spec.shape, DynamicShape) and spec.shape.min[0] != spec.shape.max[0]

    def one_symbol(io: EngineIO) -> bool:
        firsts = [t.shape[0] if t.shape else 1 for t in (*io.inputs, *io.outputs)]
        return all(isinstance(d, str) for d in firsts) and len(set(firsts) - {"?"}) <= 1

    if not all(batched(i) for i in inputs) or not all(one_symbol(io) for io in ios):
        return 0
    return min(i.shape.max[0] for i in inputs if isinstance(i.shape, DynamicShape))


def _tensors(tensors: Iterable[Any], batch: int) -> list[Message]:
    out = []
    for t in tensors:
        if t.dtype not in TYPES:
            raise TrtbuildError(f"tensor {t.name}: Triton has no data type for {t.dtype}")
        dims = [d if isinstance(d, int) else -1 for d in t.shape][1 if batch else 0 :]
        out.append(Message([("name", t.name), ("data_type", Enum(TYPES[t.dtype])), ("dims", dims)]))
    return out


def _header(target: LockedTarget, what: str) -> str:
    facts = ", ".join(f"{k} {v}" for k, v in sorted(target.device.items()))
    return f"{MARK}: {target.name}, {what}\n# built for: {facts}\n"


def part_model(
    name: str,
    target: LockedTarget,
    index: int,
    io: EngineIO,
    batch: int,
    instances: int,
    plugins: list[str] | None = None,
) -> TritonModel:
    """One part as a Triton model; `plugins`: custom-operator libraries ONNX Runtime loads
    (`model_operations.op_library_filename`; TensorRT plugins are the server's: LD_PRELOAD)."""
    platform = PLATFORMS[target.backend]
    part = target.parts[index]
    fields: list[tuple[str, Any]] = [
        ("name", name),
        ("platform", platform.platform),
        ("max_batch_size", batch),
        ("input", _tensors(io.inputs, batch)),
        ("output", _tensors(io.outputs, batch)),
        ("instance_group", [Message([("count", instances), ("kind", Enum(platform.kind))])]),
        ("default_model_filename", platform.filename),
    ]
    if plugins and target.backend == "onnxruntime":
        fields.append(("model_operations", Message([("op_library_filename", plugins)])))
    capability = target.device.get("compute_capability")
    if capability:  # a plan runs only on the compute capability it was built for: pin it
        fields.append(
            ("cc_model_filenames", [Message([("key", capability), ("value", platform.filename)])])
        )
    files = {platform.filename: part.sha256}
    if platform.sidecars:
        files.update(part.sidecars)
    what = f"part {index} of {len(target.parts)}"
    return TritonModel(
        name, platform.platform, _header(target, what) + pbtxt(Message(fields)), files
    )


def ensemble(
    name: str,
    target: LockedTarget,
    description: dict[str, Any],
    parts: list[TritonModel],
    ios: list[EngineIO],
    batch: int,
) -> TritonModel:
    """Steps in build order; each boundary tensor keeps its name from the part that makes it to
    the parts that read it (names are unique in a model's graph)."""
    inputs = {t.name: t for io in ios for t in io.inputs}
    outputs = {t.name: t for io in ios for t in io.outputs}
    steps = [
        Message(
            [
                ("model_name", model.name),
                ("model_version", -1),
                ("input_map", [Message([("key", t.name), ("value", t.name)]) for t in io.inputs]),
                ("output_map", [Message([("key", t.name), ("value", t.name)]) for t in io.outputs]),
            ]
        )
        for model, io in zip(parts, ios)
    ]
    fields: list[tuple[str, Any]] = [
        ("name", name),
        ("platform", "ensemble"),
        ("max_batch_size", batch),
        # an input the model never reads is in engine.json, but no part takes it
        (
            "input",
            _tensors(
                (inputs[i["name"]] for i in description["inputs"] if i["name"] in inputs), batch
            ),
        ),
        ("output", _tensors((outputs[o["name"]] for o in description["outputs"]), batch)),
        ("ensemble_scheduling", Message([("step", steps)])),
    ]
    what = f"ensemble of {len(parts)} parts"
    return TritonModel(name, "ensemble", _header(target, what) + pbtxt(Message(fields)), {})


def target_models(
    recipe: Recipe, target: LockedTarget, store: Store, instances: int
) -> list[TritonModel]:
    """A plain model for a one-part target; else the part models and their ensemble."""
    if target.backend not in PLATFORMS:
        raise TrtbuildError(f"{target.name}: no Triton platform for backend {target.backend}")
    folder = Path(target.dir)
    try:
        description = json.loads((folder / "engine.json").read_text())
    except (OSError, ValueError):
        raise TrtbuildError(
            f"{folder}/engine.json: missing or unreadable; run `trtbuild run`"
        ) from None
    backend = backend_class(target.backend)
    ios = [
        backend.describe(_blob(store, part.sha256, folder / part.engine)) for part in target.parts
    ]
    batch = max_batch_size(recipe.model_spec(target.model).inputs, ios)
    base = model_name(target)
    plugins = description.get("plugins", [])
    if len(target.parts) == 1:
        return [part_model(base, target, 0, ios[0], batch, instances, plugins)]
    parts = [
        part_model(f"{base}_part{i}", target, i, io, batch, instances, plugins)
        for i, io in enumerate(ios)
    ]
    return [*parts, ensemble(base, target, description, parts, ios, batch)]


def _blob(store: Store, digest: str, published: Path) -> Path:
    blob = store.verified_blob(digest)
    if blob is None:
        raise TrtbuildError(f"{published}: its engine ({digest[:12]}) is not in the cache")
    return blob


def write_repository(models: list[TritonModel], out: Path, store: Store, owned: str) -> None:
    """Stage every model beside the repository, then swap each in whole; afterwards remove the
    part models of `owned` targets (trtbuild's own, by their mark) that this deploy no longer has.
    """
    out.mkdir(parents=True, exist_ok=True)
    staged = {}
    try:
        for model in models:
            folder = out / f".{model.name}.new-{os.getpid()}"
            shutil.rmtree(folder, ignore_errors=True)
            (folder / "1").mkdir(parents=True)
            for filename, digest in model.files.items():
                store.export_blob(digest, folder / "1" / filename)
            atomic.write_text(folder / "config.pbtxt", model.config)
            staged[model.name] = folder
        for name, folder in staged.items():
            atomic.swap_dir(folder, out / name)
    except OSError as exc:
        raise atomic.write_error(out, exc) from None
    finally:
        for folder in staged.values():
            shutil.rmtree(folder, ignore_errors=True)
    stale = re.compile(owned)
    for folder in out.iterdir():
        if folder.name not in staged and stale.fullmatch(folder.name) and _ours(folder):
            shutil.rmtree(folder)


def _ours(folder: Path) -> bool:
    try:
        return (folder / "config.pbtxt").read_text().startswith(MARK)
    except OSError:
        return False


def deploy(recipe: Recipe, store: Store, out: Path, instances: int) -> list[TritonModel]:
    """Every target of the recipe's lock (the build just written) into the repository `out`."""
    lock = lockfile.read_lock(lockfile.lock_path(recipe.path))
    if lock is None:
        raise TrtbuildError(f"{recipe.path}: no lock file beside it; run `trtbuild run` first")
    models = [m for t in lock.targets for m in target_models(recipe, t, store, instances)]
    owned = "|".join(re.escape(model_name(t)) + r"_part\d+" for t in lock.targets)
    write_repository(models, out, store, owned)
    return models
