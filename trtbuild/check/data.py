"""The check's data, torch-free: its input samples, and the reference file both sides read.

A reference file is an .npz (a zip of .npy entries, np.load(allow_pickle=False) reads it) holding,
for each sample k, every model input, every tensor passed between parts and every model output
under "k/<tensor name>"; floating tensors at float32 (the model run at fp32), others as they are.
"""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from trtbuild.errors import TrtbuildError
from trtbuild.recipe.globs import matching_files

FLOAT_DTYPES = {"float32", "float16", "bfloat16", "float64"}


def sample_shapes(inputs: list[dict[str, Any]]) -> list[dict[str, list[int]]]:
    """The input shapes of the check: every dynamic dimension at its min, opt and max (all inputs
    together), duplicates dropped; a static model has one. `inputs`: recipe InputSpec dumps."""
    out: list[dict[str, list[int]]] = []
    for which in ("min", "opt", "max"):
        shapes = {
            i["name"]: list(i["shape"][which] if isinstance(i["shape"], dict) else i["shape"])
            for i in inputs
        }
        if shapes not in out:
            out.append(shapes)
    return out


def make_samples(request: dict[str, Any], root: Path) -> list[dict[str, np.ndarray]]:
    """The check's input samples: the user's .npz files (`data`, a glob relative to `root`), else
    seeded random ones at sample_shapes: floats standard normal, integers in [low, high) of the
    input's `values`. Without `values`, integers are 1 and bools True: a mask that attends
    everywhere and an id any table has. (Random 0/1 masks leave query rows that attend to
    nothing, whose outputs no model defines and exporters compute differently: Llama's logits
    differed by rel_l2 0.36 there while every attended row matched.) Float arrays are float32."""
    inputs = request["inputs"]
    if request.get("data"):
        return [_user_sample(Path(f), inputs) for f in data_files(request["data"], root)]
    samples = []
    for k, shapes in enumerate(sample_shapes(inputs)):
        rng = np.random.default_rng([request["seed"], k])
        sample = {}
        for spec in inputs:
            shape, dtype = shapes[spec["name"]], spec["dtype"]
            if dtype in FLOAT_DTYPES:
                sample[spec["name"]] = rng.standard_normal(shape, dtype=np.float32)
            elif spec.get("values"):
                low, high = spec["values"]
                sample[spec["name"]] = rng.integers(low, high, shape).astype(np.dtype(dtype))
            else:
                sample[spec["name"]] = np.ones(shape, dtype=np.dtype(dtype))
        samples.append(sample)
    return samples


def data_files(pattern: str, root: Path) -> list[Path]:
    """The sample files `pattern` names (sorted, `**` recursive, folders never), the files the
    lock's [[glob]] entry records (trtbuild.recipe.globs); none is an error naming the pattern."""
    files = matching_files(pattern, root)
    if not files:
        raise TrtbuildError(f"field 'model.check.data': no file matches {pattern!r} in {root}")
    return files


def read_sample(path: Path, inputs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    """One sample file: an .npz holding an array per model input (`inputs`: InputSpec dumps),
    floats as float32; a missing input or an unreadable file is a TrtbuildError naming it."""
    return _user_sample(path, inputs)


def _user_sample(path: Path, inputs: list[dict[str, Any]]) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError) as exc:
        raise TrtbuildError(f"{path}: expected an .npz file of named arrays: {exc}") from None
    return as_sample(arrays, inputs, str(path), "no array named")


def as_sample(
    arrays: Any, inputs: list[dict[str, Any]], where: str, missing: str = "has no tensor"
) -> dict[str, np.ndarray]:
    """One sample from a mapping of input name -> numpy array or CPU torch tensor (`inputs`:
    InputSpec dumps), floats as float32; anything else is a TrtbuildError naming `where`."""
    if not hasattr(arrays, "keys"):
        raise TrtbuildError(
            f"{where}: expected a dict of model input name -> array, got {type(arrays).__name__}"
        )
    sample = {}
    for spec in inputs:
        if spec["name"] not in arrays:
            has = ", ".join(repr(k) for k in arrays)
            raise TrtbuildError(
                f"{where} {missing} {spec['name']!r} (a model input; it has {has or 'none'})"
            )
        value = arrays[spec["name"]]
        value = value.detach().cpu().numpy() if hasattr(value, "detach") else np.asarray(value)
        if not _fits(list(value.shape), spec["shape"]):
            raise TrtbuildError(
                f"{where}: input {spec['name']!r} has shape {list(value.shape)}, expected "
                f"{spec['shape']} (the recipe's shape of it)"
            )
        dtype = "float32" if spec["dtype"] in FLOAT_DTYPES else spec["dtype"]
        sample[spec["name"]] = value.astype(dtype)
    return sample


def _fits(shape: list[int], declared: Any) -> bool:
    """Whether `shape` is the recipe's static shape, or within its min and max."""
    if not isinstance(declared, dict):
        return shape == list(declared)
    low, high = declared["min"], declared["max"]
    return len(shape) == len(low) and all(a <= s <= b for s, a, b in zip(shape, low, high))


class Writer:
    """Writes a reference file one array at a time (np.savez needs them all at once)."""

    def __init__(self, path: Path) -> None:
        self.zip = zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True)

    def add(self, key: str, array: np.ndarray) -> None:
        with self.zip.open(f"{key}.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)

    def close(self) -> None:
        self.zip.close()


def read_later(inputs: list[list[str]], outputs: list[str]) -> list[set[str]]:
    """Per part (`inputs`: each part's input names, in order): the tensors the parts after it,
    or the model's `outputs`, read; what a chain may free once the part has run."""
    out, later = [], set(outputs)
    for names in reversed(inputs):
        out.append(set(later))
        later |= set(names)
    return out[::-1]


def key(sample: int, tensor: str) -> str:
    return f"{sample}/{tensor}"
