"""trtbuild.load(dir): the engines of one target chained back into one callable."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from trtbuild.backends import get_backend
from trtbuild.errors import TrtbuildError
from trtbuild.store import sha256_file


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
            self.engines.append(self.backend.load(path))
        self.input_names = [i["name"] for i in description["inputs"]]
        self.output_names = [o["name"] for o in description["outputs"]]

    def __call__(self, *inputs: Any) -> Any:
        if len(inputs) != len(self.input_names):
            raise TypeError(
                f"expected {len(self.input_names)} inputs ({', '.join(self.input_names)}), got {len(inputs)}"
            )
        values: dict[str, Any] = {
            name: self.backend.to_native(x) for name, x in zip(self.input_names, inputs)
        }
        for engine in self.engines:
            feeds = {name: values[name] for name in engine.input_names}
            values.update(engine.run(feeds))
        outs = tuple(self.backend.to_torch(values[name]) for name in self.output_names)
        return outs[0] if len(outs) == 1 else outs

    @property
    def parts(self) -> int:
        return len(self.engines)


def load(directory: str | Path, verify: bool = True) -> ChainedModel:
    """Load build/<recipe>/<model>/<precision>/ as one callable taking and returning torch tensors."""
    directory = Path(directory)
    try:
        description = json.loads((directory / "engine.json").read_text())
    except FileNotFoundError:
        raise TrtbuildError(f"{directory}: no engine.json here; run `trtbuild run` first") from None
    return ChainedModel(directory, description, verify)
