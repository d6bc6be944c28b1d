"""Model import and export on the meta device, and lazy per-tensor weight loading.

Runs inside worker processes only (it imports torch); the orchestrator never imports it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from trtbuild.errors import TrtbuildError
from trtbuild.model import hf
from trtbuild.model.binding import Binding, bind, select
from trtbuild.model.examples import dynamic_shapes, example_inputs, small_sizes
from trtbuild.model.exporterrors import explain
from trtbuild.model.partdims import oblivious_sizes
from trtbuild.model.weights import checkpoint_names, load_weights
from trtbuild.recipe.load import Recipe
from trtbuild.recipe.schema import ModelSpec

if TYPE_CHECKING:
    from torch.export import ExportedProgram

PRECISION_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# Quantized targets are exported at fp32; each part's ONNX is quantized before its build
# (trtbuild.backends.quantize).
PRECISION_DTYPES.update(dict.fromkeys(("int8", "int4", "fp8"), torch.float32))


def import_factory(
    recipe: Recipe, source: str, field: str = "model.source"
) -> Callable[..., nn.Module]:
    """ "file.py:factory" (relative to the recipe) or "package.module:factory" (of recipe field
    `field`, which errors name)."""
    module_ref, _, attr = source.rpartition(":")
    if module_ref.endswith(".py"):
        path = recipe.resolve(module_ref)
        if not path.is_file():
            raise TrtbuildError(f"{recipe.path}: field {field!r}: file {path} not found")
        name = "trtbuild_models_" + hashlib.sha256(str(path).encode()).hexdigest()[:12]
        module = sys.modules.get(name)
        if module is None:
            spec = importlib.util.spec_from_file_location(name, path)
            assert spec and spec.loader
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module
            sys.path.insert(0, str(path.parent))
            try:
                spec.loader.exec_module(module)
            except Exception as exc:
                del sys.modules[name]
                raise TrtbuildError(f"{path}: import failed: {type(exc).__name__}: {exc}") from exc
            finally:
                sys.path.remove(str(path.parent))
    else:
        try:
            module = importlib.import_module(module_ref)
        except ImportError as exc:
            raise TrtbuildError(
                f"{recipe.path}: field {field!r}: cannot import {module_ref}: {exc}"
            ) from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise TrtbuildError(f"{recipe.path}: field {field!r}: {source} has no callable {attr}")
    return factory


class PrecisionWrapper(nn.Module):
    """Runs the model at `dtype` while inputs and outputs keep the dtypes the recipe declares.

    forward(*inputs) takes the recipe's inputs in recipe order; `binding` passes them to the
    model's forward() by name (with fixed `extra` keyword arguments); `outputs` picks fields of a
    returned mapping (binding.select). The output keeps the model's structure.
    """

    model: nn.Module

    def __init__(
        self,
        model: nn.Module,
        dtype: torch.dtype,
        names: list[str],
        binding: Binding,
        extra: dict[str, Any] | None = None,
        outputs: list[str] | None = None,
        transformers: bool = False,
        where: str = "",
    ) -> None:
        super().__init__()
        self.model = model
        self.dtype = dtype
        self.names, self.binding, self.extra = names, binding, extra or {}
        self.outputs, self.transformers, self.where = outputs, transformers, where

    def forward(self, *inputs: torch.Tensor) -> Any:
        cast = [
            x.to(self.dtype) if x.is_floating_point() and x.dtype != self.dtype else x
            for x in inputs
        ]
        out = self.binding.call(self.model, dict(zip(self.names, cast)), self.extra)
        return select(out, self.outputs, self.transformers, self.where)


def build_model(recipe: Recipe, spec: ModelSpec, precision: str) -> PrecisionWrapper:
    """The wrapped model in eval mode, holding no parameter bytes (see `parameters_on_meta`).

    Raises TrtbuildError when the recipe's inputs do not fit forward()'s parameters."""
    with parameters_on_meta():
        model = make_model(recipe, spec)
    where = recipe.model_loc(spec.name, "outputs" if spec.outputs else "source")
    names = [i.name for i in spec.inputs]
    extra = hf.call_kwargs(model) if spec.transformers else {}
    binding = bind(
        model, names, extra, f"{recipe.model_loc(spec.name, 'inputs')}: model '{spec.name}'"
    )
    dtype = PRECISION_DTYPES[precision]
    return PrecisionWrapper(
        model.eval(), dtype, names, binding, extra, spec.outputs, spec.transformers, where
    ).eval()


FACTORY_SEED = 0  # torch's RNG before every factory call: code-made tensors agree across jobs


def make_model(recipe: Recipe, spec: ModelSpec) -> nn.Module:
    """The user's model as its factory (or transformers class) makes it, torch seeded first.

    Raises TrtbuildError naming the model's source if the factory raises or returns no nn.Module.
    """
    factory = (lambda: hf.build(recipe, spec)) if spec.transformers else _factory(recipe, spec)
    torch.manual_seed(FACTORY_SEED)
    try:
        model = factory()
    except TrtbuildError:
        raise
    except Exception as exc:
        raise TrtbuildError(
            f"{recipe.model_loc(spec.name, 'source')}: model '{spec.name}': factory {spec.source} "
            f"raised {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(model, nn.Module):
        raise TrtbuildError(
            f"{recipe.path}: model '{spec.name}': {spec.source} did not return an nn.Module"
        )
    return model


def _factory(recipe: Recipe, spec: ModelSpec) -> Callable[[], nn.Module]:
    factory = import_factory(recipe, spec.source)
    return lambda: factory(**spec.kwargs)


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Construct a model whose parameters live on the meta device while its buffers are real.

    Parameters are weights: they come from the checkpoint (or seeded init), so holding them would
    only cost memory. Buffers are computed by the model's own constructor (rotary frequencies,
    position ids, masks); the non-persistent ones are in no checkpoint, so their real values are
    kept. (As accelerate's init_empty_weights(include_buffers=False) does.)
    """
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param: nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def export_model(
    recipe: Recipe, spec: ModelSpec, precision: str
) -> tuple[PrecisionWrapper, ExportedProgram]:
    """torch.export of the whole graph with fake parameters and inputs: no weight bytes.

    Fake tensors on the CPU (not the meta device) so that code that makes tensors in forward()
    (`torch.tensor(...)`, empty caches) makes real ones: their values are in program.constants.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    model = build_model(recipe, spec, precision)
    model.model.to(PRECISION_DTYPES[precision])
    mode = FakeTensorMode(allow_non_fake_inputs=True)
    _fake_checkpoint_tensors(model, mode)
    with mode:
        args = example_inputs(spec.inputs, "cpu")
    try:
        with oblivious_sizes(small_sizes(spec.inputs)):  # a dynamic batch at opt = 1
            program = torch.export.export(model, args, dynamic_shapes=dynamic_shapes(spec.inputs))
    except Exception as exc:
        where = f"{recipe.path}: model '{spec.name}': torch.export failed"
        raise explain(exc, where, [i.name for i in spec.inputs]) from None
    return model, program


def _fake_checkpoint_tensors(model: nn.Module, mode: Any) -> None:
    """Swap parameters and persistent buffers for fake CPU tensors (ties kept); keep the rest."""
    fakes: dict[int, torch.Tensor] = {}

    def fake(tensor: torch.Tensor) -> torch.Tensor:
        if id(tensor) not in fakes:
            with mode:
                fakes[id(tensor)] = torch.empty(tensor.shape, dtype=tensor.dtype)
        return fakes[id(tensor)]

    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None:
                module._parameters[name] = nn.Parameter(fake(param), requires_grad=False)
        for name, buf in module._buffers.items():
            if buf is not None and name not in module._non_persistent_buffers_set:
                module._buffers[name] = fake(buf)


def code_constants(program: ExportedProgram) -> dict[str, torch.Tensor]:
    """Tensors that come from the model's code, by OpGraph name: non-persistent buffers (made by
    the constructor) and constants made in forward(). Real values, never in a checkpoint."""
    from torch._subclasses.fake_tensor import FakeTensor

    from trtbuild.model.graph import WRAPPED

    out = {}
    for name, value in program.constants.items():
        if not isinstance(value, torch.Tensor):
            continue  # script objects: not tensors
        if isinstance(value, FakeTensor) or value.is_meta:
            raise TrtbuildError(
                f"the model's tensor {name.removeprefix(WRAPPED)!r} has no value at export time "
                "(made on the meta device); make it without device='meta'"
            )
        out[name.removeprefix(WRAPPED)] = value.detach()
    return out


def eager_model(recipe: Recipe, spec: ModelSpec, precision: str) -> PrecisionWrapper:
    """The whole model with its weights, as PyTorch runs it: the reference for checks and tests."""
    fresh = build_model(recipe, spec, precision)
    state = load_weights(
        recipe, spec, build_model(recipe, spec, precision).model, checkpoint_names(fresh.model)
    )
    fresh.model.load_state_dict(state, assign=True, strict=False)
    fresh.model.to(PRECISION_DTYPES[precision])
    return fresh
