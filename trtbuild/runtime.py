"""trtbuild.load(dir): the engines of one target chained back into one callable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trtbuild.backends import get_backend
from trtbuild.cache.files import sha256_file
from trtbuild.errors import TrtbuildError


class ChainedModel:
    """Runs the parts back to back; boundary tensors stay backend-native between engines."""

    def __init__(self, directory: Path, description: dict[str, Any], verify: bool) -> None:
        self.directory = directory
        self.description = description
        self.backend = get_backend(description["backend"])
        self.engines = []
        for part in description["parts"]:
            path = directory / part["engine"]
            if verify and sha256_file(path) != part["sha256"]:
                raise TrtbuildError(f"{path}: engine does not match the sha256 in engine.json")
            self.engines.append(self.backend.load(path, description.get("plugins", [])))
        self.input_names = [i["name"] for i in description["inputs"]]
        self.output_names = [o["name"] for o in description["outputs"]]

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The model's outputs for its inputs (torch tensors, by position in engine.json's order
        or by name), in the structure the model returns: a tensor, a tuple or list, or a dict
        (a ModelOutput comes back as a dict). An input the model never reads is taken and ignored.

        Raises TypeError for a missing, extra or unknown input, ValueError for a shape outside
        the declared range (naming the input, the axis and the range).
        """
        inputs = self._bind(args, kwargs)
        values: dict[str, Any] = {name: self.backend.to_native(x) for name, x in inputs.items()}
        for engine in self.engines:
            feeds = {name: values[name] for name in engine.input_names}
            values.update(engine.run(feeds))
        structure = self.description.get("structure")
        if structure is None:  # engine.json before the output structure was recorded
            outs = tuple(self.backend.to_torch(values[name]) for name in self.output_names)
            return outs[0] if len(outs) == 1 else outs
        return self._rebuild(structure, values, inputs)

    def _bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        names = self.input_names
        listing = f"({', '.join(names)})"
        if len(args) > len(names):
            raise TypeError(f"expected {len(names)} inputs {listing}, got {len(args)}")
        inputs = dict(zip(names, args))
        for name, x in kwargs.items():
            if name not in names:
                raise TypeError(f"unknown input {name!r}; the inputs are {listing}")
            if name in inputs:
                raise TypeError(f"input {name!r} given twice (by position and by name)")
            inputs[name] = x
        missing = [n for n in names if n not in inputs]
        if missing:
            raise TypeError(f"missing input {missing[0]!r}: expected {len(names)} inputs {listing}")
        for spec in self.description["inputs"]:
            _check_shape(spec, inputs[spec["name"]])
        return {n: inputs[n] for n in names}

    def _rebuild(self, node: dict[str, Any], values: dict[str, Any], inputs: dict[str, Any]) -> Any:
        if "output" in node:
            return self.backend.to_torch(values[node["output"]])
        if "input" in node:
            return inputs[node["input"]]
        if "none" in node:
            return None
        if "const" in node:
            return node["const"]
        if "dict" in node:
            return {k: self._rebuild(v, values, inputs) for k, v in node["dict"]}
        items = [self._rebuild(v, values, inputs) for v in node.get("list", node.get("tuple", []))]
        return items if "list" in node else tuple(items)

    @property
    def parts(self) -> int:
        return len(self.engines)


def _check_shape(spec: dict[str, Any], x: Any) -> None:
    """Refuse an input whose shape is outside the range the engine was built for."""
    if "min" not in spec:
        return
    shape = tuple(getattr(x, "shape", ()))
    lo, hi = spec["min"], spec["max"]
    if len(shape) != len(lo):
        raise ValueError(
            f"input {spec['name']!r}: expected {len(lo)} dimensions, got shape {list(shape)}"
        )
    for axis, (size, a, b) in enumerate(zip(shape, lo, hi)):
        if not a <= size <= b:
            expected = f"{a}" if a == b else f"{a}..{b}"
            raise ValueError(
                f"input {spec['name']!r}: axis {axis} is {size}, outside the declared range "
                f"{expected} (shape {list(shape)}; built for min {lo}, max {hi})"
            )


def load(directory: str | Path, verify: bool = True) -> ChainedModel:
    """Load build/<recipe>/<model>/<precision>/ as one callable taking and returning torch tensors."""
    directory = Path(directory)
    try:
        description = json.loads((directory / "engine.json").read_text())
    except FileNotFoundError:
        raise TrtbuildError(f"{directory}: no engine.json here; run `trtbuild run` first") from None
    return ChainedModel(directory, description, verify)
