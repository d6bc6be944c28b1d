"""The recipe schema (pydantic) and its loader: one place that knows what a recipe may say."""

from __future__ import annotations

import urllib.parse
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from trtbuild.recipe.checkspec import CheckSpec
from trtbuild.recipe.quantspec import CalibrationSpec, Keep
from trtbuild.recipe.sizes import parse_size

Size = Annotated[int, BeforeValidator(parse_size)]
Precision = Literal["fp32", "fp16", "bf16", "int8", "int4", "fp8"]
BackendName = Literal["auto", "onnxruntime", "tensorrt"]


def _component(value: Any) -> Any:
    """Names become folders (build/<recipe>/<model>/...): one path component, never . or .."""
    if isinstance(value, str) and value.strip(".") == "":
        raise ValueError(f"expected a name that is not made of dots only, got {value!r}")
    return value


Name = Annotated[str, BeforeValidator(_component), Field(pattern=r"^[A-Za-z0-9_.-]+$")]
# A device kind: a Ray resource name that nodes offer, and part of a target's folder.
DeviceKind = Name


def slot(precision: str, kind: str | None) -> str:
    """A target's folder under its model's: `fp16`, or `fp16@<kind>` when built for a kind."""
    return precision if kind is None else f"{precision}@{kind}"


DType = Literal["float32", "float16", "bfloat16", "int64", "int32", "bool"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Budget(_Strict):
    host_memory: Size = 2 << 30
    gpu_workspace: Size = 1 << 30


class TensorRTSettings(_Strict):
    """Builder options of the TensorRT backend; ignored by other backends."""

    optimization_level: int = Field(3, ge=0, le=5)
    typing: Literal["strong", "weak"] = "strong"
    hardware_compatibility: Literal["none", "ampere_plus", "same_compute_capability"] = "none"
    version_compatible: bool = False
    exclude_lean_runtime: bool = False
    refit: bool = False
    strip_plan: bool = False
    weight_streaming: bool = False
    max_aux_streams: int | None = Field(None, ge=0)
    timing_cache: str | None = None
    tactic_dram: bool = True


class Defaults(_Strict):
    backend: BackendName = "auto"
    precisions: list[Precision] = Field(
        default_factory=lambda: list[Precision](["fp32"]), min_length=1
    )
    budget: Budget = Budget()
    opset: int = Field(18, ge=17, le=23)
    tensorrt: TensorRTSettings = TensorRTSettings()
    # Device kinds to build for, each its own target (executor.py: where a kind is built);
    # none: this machine's own device.
    devices: list[DeviceKind] | None = Field(None, min_length=1)


class RandomInit(_Strict):
    init: Literal["random"] = "random"
    seed: int = 0


def _dim(value: Any) -> Any:
    if isinstance(value, int) and not isinstance(value, bool) and value < 1:
        raise ValueError(f"expected dimensions >= 1, got {value}")
    return value


Dim = Annotated[int, BeforeValidator(_dim)]


class DynamicShape(_Strict):
    min: list[Dim]
    opt: list[Dim]
    max: list[Dim]

    @model_validator(mode="after")
    def _ordered(self) -> DynamicShape:
        if not len(self.min) == len(self.opt) == len(self.max):
            raise ValueError("expected min, opt and max of the same rank")
        if any(not lo <= mid <= hi for lo, mid, hi in zip(self.min, self.opt, self.max)):
            raise ValueError("expected min <= opt <= max in every dimension")
        return self


class InputSpec(_Strict):
    name: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    shape: list[Dim] | DynamicShape
    dtype: DType = "float32"
    # integer inputs of the built-in check: drawn from [low, high) (default: 1, and bools True)
    values: tuple[int, int] | None = None

    @property
    def dynamic(self) -> bool:
        return isinstance(self.shape, DynamicShape)

    @property
    def opt_shape(self) -> list[int]:
        return list(self.shape.opt if isinstance(self.shape, DynamicShape) else self.shape)

    @property
    def max_shape(self) -> list[int]:
        return list(self.shape.max if isinstance(self.shape, DynamicShape) else self.shape)


TRANSFORMERS = "transformers"  # source = "transformers:<model class>", e.g. LlamaForCausalLM
ONNX = "onnx"  # source = "onnx:<file relative to the recipe>": trtbuild.model.onnxgraph
ONNX_PRECISIONS = ("fp32", "fp16")  # what an ONNX source is built at (trtbuild.model.onnxparts)


class ModelSpec(_Strict):
    name: Name
    # "file.py:factory", "module:factory", "transformers:<class>" or "onnx:<file>"
    source: str = Field(pattern=r"^(onnx:.+|[^:]+:[A-Za-z_][A-Za-z0-9_]*)$")
    kwargs: dict[str, Any] = Field(default_factory=dict)
    # transformers sources: an inline config, or a config.json / model folder (default: the
    # weights folder's config.json)
    config: dict[str, Any] | str | None = None
    # A file or a Hugging Face model folder; seeded init; None: the model's own state after its
    # factory ran (what it loaded or initialised itself, torch seeded with 0): trtbuild.model.ownstate
    weights: RandomInit | str | None = None
    # Files the model reads that the build must see (globs relative to the recipe, as Bazel's
    # `data`): every match is an input of its graph and pinned in the lock.
    data: list[str] = Field(default_factory=list)
    inputs: list[InputSpec] = Field(min_length=1)
    outputs: list[str] | None = Field(None, min_length=1)  # fields of a returned dict/ModelOutput
    backend: BackendName | None = None
    precisions: list[Precision] | None = Field(None, min_length=1)
    budget: Budget | None = None
    devices: list[DeviceKind] | None = Field(None, min_length=1)
    check: CheckSpec = CheckSpec()  # [model.check]: the engines against the model (check.py)
    # Custom-operator libraries (relative to the recipe): ONNX Runtime's
    # register_custom_ops_library, TensorRT's plugin registry load_library
    plugins: list[str] = Field(default_factory=list)
    calibration: CalibrationSpec | None = None  # [model.calibration]: int8 / fp8 (quantspec.py)
    keep: Keep = Field(default_factory=dict)  # {fp32 = [module globs]}: left unquantized
    precision_search: bool = False  # a failed check: keep the fewest modules that pass (search.py)

    @property
    def transformers(self) -> bool:
        return self.source.partition(":")[0] == TRANSFORMERS

    @property
    def onnx(self) -> bool:
        return self.source.partition(":")[0] == ONNX

    @model_validator(mode="after")
    def _onnx_has_its_weights(self) -> ModelSpec:
        if self.onnx:
            for name in ("weights", "config"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"expected no '{name}' with an {ONNX}:<file> source (the file holds "
                        f"its weights), got source {self.source!r}"
                    )
            if self.kwargs:
                raise ValueError(f"expected no 'kwargs' with an {ONNX}:<file> source")
        return self

    @model_validator(mode="after")
    def _config_for_transformers(self) -> ModelSpec:
        if self.config is not None and not self.transformers:
            raise ValueError(
                f"expected 'config' only with a {TRANSFORMERS}:<class> source, got source {self.source!r}"
            )
        return self


class RecipeMeta(_Strict):
    name: Name


class DeploySpec(_Strict):
    """[deploy]: the serving repository `trtbuild deploy` writes."""

    format: Literal["triton"] = "triton"
    out: str | None = None  # relative to the recipe's folder; `deploy --out` overrides it
    instances: int = Field(1, ge=1)  # Triton instance_group count of every part model


class CacheSpec(_Strict):
    """[cache]: the remote cache every machine building this recipe shares (remote.py)."""

    remote: str | None = None

    @field_validator("remote")
    @classmethod
    def _no_credentials(cls, value: str | None) -> str | None:
        """A recipe is committed and shared: a password in it would be everybody's."""
        parts = urllib.parse.urlsplit(value or "")
        if value is not None and (parts.scheme not in ("http", "https") or not parts.netloc):
            raise ValueError("expected an http:// or https:// URL")
        if parts.username is not None or parts.password is not None:
            raise ValueError(
                "expected a URL without user info, got one with credentials: put them in "
                "TRTBUILD_REMOTE_CACHE or TRTBUILD_REMOTE_CACHE_HEADER instead"
            )
        return value


class ExecutorSpec(_Strict):
    """[executor]: where jobs run (executor.py); `run --executor` and TRTBUILD_RAY_ADDRESS win."""

    kind: Literal["local", "ray"] = "local"
    address: str | None = None  # a Ray cluster's address; none: a one-node cluster here


class RecipeSchema(_Strict):
    recipe: RecipeMeta
    defaults: Defaults = Defaults()
    model: list[ModelSpec] = Field(min_length=1)
    deploy: DeploySpec = DeploySpec()
    cache: CacheSpec = CacheSpec()
    executor: ExecutorSpec = ExecutorSpec()

    @model_validator(mode="after")
    def _unique_names(self) -> RecipeSchema:
        names = [m.name for m in self.model]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"expected unique model names, got {dupes[0]!r} twice")
        return self
