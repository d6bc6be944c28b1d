"""A recipe file loaded: its validated schema, its folder (paths resolve against it), and its
targets (model x precision x backend x device kind). load_recipe raises TrtbuildError naming
the file, the line and the field."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from trtbuild.errors import TrtbuildError
from trtbuild.recipe.globs import matching_files
from trtbuild.recipe.quantspec import QUANTIZED, missing_calibration, mixed, unsupported_keep
from trtbuild.recipe.schema import (
    ONNX_PRECISIONS,
    BackendName,
    Budget,
    Defaults,
    ModelSpec,
    Precision,
    RecipeSchema,
    slot,
)
from trtbuild.recipe.tomlerrors import describe, where

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class Target:
    """One engine chain to build: a model at one precision with one backend."""

    model: ModelSpec
    precision: Precision
    backend: BackendName
    budget: Budget
    defaults: Defaults
    kind: str | None = None  # the device kind it is built for; None: this machine's

    @property
    def slot(self) -> str:
        """Its folder under the model's: the precision, and the device kind if it names one."""
        return slot(self.precision, self.kind)

    @property
    def name(self) -> str:
        return f"{self.model.name}/{self.slot}"

    @property
    def mixed(self) -> bool:
        """An fp16 target converted part by part with modules kept at fp32 (quantspec.mixed)."""
        return mixed(self.precision, self.model.keep, self.model.precision_search)

    @property
    def graph_precision(self) -> str:
        """The precision its graph is traced and its parts exported at: fp32 for a quantized or
        mixed target (the quantizer or the fp16 converter runs on each part after), else its own."""
        return "fp32" if self.precision in QUANTIZED or self.mixed else self.precision


@dataclass(frozen=True)
class Recipe:
    path: Path
    text: str
    schema: RecipeSchema

    @property
    def name(self) -> str:
        return self.schema.recipe.name

    @property
    def root(self) -> Path:
        return self.path.parent

    def targets(self, backend: str | None = None, budget: int | None = None) -> list[Target]:
        """Every model x precision, with CLI overrides applied."""
        defaults = self.schema.defaults
        out = []
        for model in self.schema.model:
            base = model.budget or defaults.budget
            chosen_budget = base.model_copy(update={"host_memory": budget}) if budget else base
            chosen_backend = backend or model.backend or defaults.backend
            kinds: list[str | None] = [None]
            kinds = [*(model.devices or defaults.devices or kinds)]
            for precision in model.precisions or defaults.precisions:
                if model.onnx and precision not in ONNX_PRECISIONS:
                    field = "precisions" if model.precisions else "defaults.precisions"
                    raise TrtbuildError(
                        f"{self.model_loc(model.name, 'source')}: model '{model.name}': "
                        f"precision {precision!r} (field '{field}') is not built from an ONNX "
                        f"source yet (expected one of {list(ONNX_PRECISIONS)})"
                    )
                for kind in kinds:
                    out.append(
                        Target(model, precision, chosen_backend, chosen_budget, defaults, kind)  # type: ignore[arg-type]
                    )
        return out

    def model_spec(self, name: str) -> ModelSpec:
        """The [[model]] table called `name` (names are unique: the schema checks it)."""
        return next(m for m in self.schema.model if m.name == name)

    def resolve(self, relative: str) -> Path:
        return (self.root / relative).resolve()

    def check_files(self) -> None:
        """Every file the recipe names exists: fail before any process starts."""
        for index, model in enumerate(self.schema.model):
            module_ref = model.source.rpartition(":")[0]
            if model.onnx and not self.resolve(model.source.partition(":")[2]).is_file():
                where = self.resolve(model.source.partition(":")[2])
                self._missing(("model", index, "source"), where, "an ONNX file")
            elif module_ref.endswith(".py") and not self.resolve(module_ref).is_file():
                self._missing(("model", index, "source"), self.resolve(module_ref), "a Python file")
            for plugin in model.plugins:
                if not self.resolve(plugin).is_file():
                    self._missing(
                        ("model", index, "plugins"), self.resolve(plugin), "a shared library"
                    )
            if isinstance(model.weights, str) and not self.resolve(model.weights).exists():
                self._missing(
                    ("model", index, "weights"),
                    self.resolve(model.weights),
                    "a .safetensors or .pt file, or a model folder",
                )
            if isinstance(model.config, str) and not self.resolve(model.config).exists():
                self._missing(
                    ("model", index, "config"),
                    self.resolve(model.config),
                    "a config.json file or a model folder",
                )
            self.data_files(model)

    def plugins(self, model: str) -> list[str]:
        """The model's custom-operator libraries, as absolute paths."""
        return [str(self.resolve(p)) for p in self.model_spec(model).plugins]

    def data_files(self, spec: ModelSpec) -> list[Path]:
        """The files a model's `data` globs match, sorted; a glob matching none is an error."""
        found: set[Path] = set()
        for pattern in spec.data:
            matched = matching_files(pattern, self.root)
            if not matched:
                raise TrtbuildError(
                    f"{self.model_loc(spec.name, 'data')}: field 'data' of model '{spec.name}': "
                    f"expected files matching {pattern!r} (relative to {self.root}), found none"
                )
            found.update(p.resolve() for p in matched)
        return sorted(found)

    def where(self, loc: tuple[Any, ...]) -> str:
        """ "path:line" of a key path, or just the path when the line is unknown."""
        return where(self.path, self.text, loc)

    def model_loc(self, name: str, key: str) -> str:
        index = next(i for i, m in enumerate(self.schema.model) if m.name == name)
        return self.where(("model", index, key))

    def _missing(self, loc: tuple[Any, ...], path: Path, expected: str) -> None:
        where = self.where(loc)
        field = f"{loc[0]}[{loc[1]}].{loc[2]}"
        raise TrtbuildError(
            f"{where}: field '{field}': expected {expected}, but {path} does not exist"
        )


def load_recipe(path: str | Path) -> Recipe:
    """Parse and validate a recipe; every mistake is a one-line TrtbuildError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise TrtbuildError(f"{path}: recipe file not found") from None
    except UnicodeDecodeError as exc:
        line = path.read_bytes()[: exc.start].count(b"\n") + 1
        raise TrtbuildError(
            f"{path}:{line}: expected UTF-8 text (TOML), got byte 0x{exc.object[exc.start]:02x}"
        ) from None
    except OSError as exc:
        raise TrtbuildError(f"{path}: cannot read recipe: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TrtbuildError(f"{path}: TOML syntax error: {exc}") from None
    try:
        schema = RecipeSchema.model_validate(data)
    except ValidationError as exc:
        raise TrtbuildError(describe(path, text, exc)) from None
    recipe = Recipe(path.resolve(), text, schema)
    for index, model in enumerate(schema.model):
        precisions: list[str] = list(model.precisions or schema.defaults.precisions)
        error = missing_calibration(
            model.name, precisions, model.calibration is not None
        ) or unsupported_keep(
            model.name, precisions, model.keep, model.precision_search, model.onnx
        )
        if error:
            raise TrtbuildError(f"{where(path, text, ('model', index))}: {error}")
        calib = model.calibration
        if calib is not None and calib.generator:
            file = recipe.resolve(calib.data.rpartition(":")[0])
            if not file.is_file():
                raise TrtbuildError(
                    f"{recipe.model_loc(model.name, 'calibration')}: field 'calibration.data': "
                    f"{calib.data!r} names {file}, which is not a file (expected a .py file "
                    "relative to the recipe, with the function after the colon)"
                )
    return recipe
