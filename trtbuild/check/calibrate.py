"""Calibration (worker side): the model at fp32 on calibration samples, and the range of every
activation, as a table keyed by OpGraph tensor names.

The plan's parts run in order, each with its own weights (loaded once, at fp32) on one sample at
a time; the tensors a later part reads are spilled to scratch files, one per part and sample, and
removed once no later part reads them. Statistics are reduced as each value is made: a running
min/max, or running histograms (onnxruntime.quantization's HistogramCollector: entropy,
percentile); no sample's activations are kept. The names are the OpGraph's (model inputs, op
outputs, part boundaries), which are also the value names in every part's ONNX: the table is the
same whatever the split (tests/test_quantize.py).
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.fx as fx

from trtbuild.check import data as checkdata
from trtbuild.check.reference import run_graph
from trtbuild.model.lazyweights import torch_dtype
from trtbuild.model.partexport import Prepared, meta_part_module

TABLE_FORMAT = 1


class Ranges:
    """Running statistics per tensor name, reduced sample by sample."""

    def __init__(self, method: str) -> None:
        self.method = method
        self.minmax: dict[str, list[float]] = {}
        self.collector: Any = None
        if method != "minmax":
            from onnxruntime.quantization.calibrate import HistogramCollector

            # onnxruntime's defaults for each method (calibrate.create_calibrator)
            bins, symmetric = (128, False) if method == "entropy" else (2048, True)
            self.collector = HistogramCollector(method, symmetric, bins, 128, 99.999, "same")

    def add(self, name: str, value: Any) -> None:
        """One sample's value of tensor `name` (a float tensor or array of any shape)."""
        array = value.detach().float().numpy() if isinstance(value, torch.Tensor) else value
        array = np.asarray(array, dtype=np.float32)
        if array.size == 0:
            return
        if self.collector is None:
            low, high = float(np.nanmin(array)), float(np.nanmax(array))
            seen = self.minmax.setdefault(name, [low, high])
            seen[0], seen[1] = min(seen[0], low), max(seen[1], high)
            return
        with contextlib.redirect_stdout(io.StringIO()):  # it prints a line per call
            self.collector.collect({name: array})

    def table(self) -> dict[str, dict[str, float]]:
        """name -> {"min", "max"}: the range quantization is to cover."""
        if self.collector is None:
            found = {n: (lo, hi) for n, (lo, hi) in self.minmax.items()}
        else:
            with contextlib.redirect_stdout(io.StringIO()):
                result = self.collector.compute_collection_result()
            found = {n: (float(v[0]), float(v[1])) for n, v in result.items()}
        return {n: {"min": lo, "max": hi} for n, (lo, hi) in sorted(found.items())}


class PartWeights:
    """A part's weights at fp32, each loaded at its first use and kept for all the samples."""

    def __init__(self, source: Any, constants: dict[str, torch.Tensor]) -> None:
        self.source, self.constants = source, constants
        self.held: dict[str, torch.Tensor] = {}

    def load(self, wanted: list[str]) -> dict[str, torch.Tensor]:
        missing = [n for n in wanted if n not in self.held and n not in self.constants]
        found = {**(self.source.load(missing) if missing else {}), **self.constants}
        for name in wanted:
            if name not in self.held:
                value = found[name]
                self.held[name] = value.float() if value.is_floating_point() else value
        return {n: self.held[n] for n in wanted}


def sample(spec: dict[str, Any], k: int) -> dict[str, np.ndarray]:
    """Calibration sample k: the k-th file of `spec["files"]`, or seeded random inputs at the
    recipe's opt shapes (floats standard normal, integers as the check draws them)."""
    inputs = spec["inputs"]
    if spec.get("files"):
        return checkdata.read_sample(Path(spec["files"][k]), inputs)
    rng = np.random.default_rng([spec["seed"], k])
    out: dict[str, np.ndarray] = {}
    for i in inputs:
        shape = i["shape"]["opt"] if isinstance(i["shape"], dict) else i["shape"]
        if i["dtype"] in checkdata.FLOAT_DTYPES:
            out[i["name"]] = np.asarray(rng.standard_normal(shape, dtype=np.float32))
        elif i.get("values"):
            low, high = i["values"]
            out[i["name"]] = rng.integers(low, high, shape).astype(np.dtype(i["dtype"]))
        else:
            out[i["name"]] = np.ones(shape, dtype=np.dtype(i["dtype"]))
    return out


def generate(spec: dict[str, Any], spill: Path, recipe: Any) -> dict[str, Any]:
    """Run the function of data = "file.py:function" (spec["generator"], the file absolute) and
    write the first spec["count"] samples it yields to `spill`, one at a time; `spec` then names
    those files. Returns what the function's process read (trtbuild.model.depfile): its inputs.

    Raises TrtbuildError naming the function when it fails, yields no sample or a sample that
    is not a dict holding every model input."""
    from trtbuild.errors import TrtbuildError
    from trtbuild.model import depfile
    from trtbuild.model.frontend import import_factory

    where = spec["generator"]
    files: list[str] = []
    with depfile.recording() as touched:
        function: Any = import_factory(recipe, where, "model.calibration.data")
        try:
            for k, item in enumerate(function()):
                arrays = checkdata.as_sample(item, spec["inputs"], f"{where}: sample {k}")
                path = spill / f"sample-{k}.npz"
                np.savez(path, **arrays)  # type: ignore[arg-type]
                files.append(str(path))
                if len(files) == spec["count"]:
                    break
        except TrtbuildError:
            raise
        except Exception as exc:
            raise TrtbuildError(f"{where}: {type(exc).__name__}: {exc}") from exc
    if not files:
        raise TrtbuildError(f"{where}: yielded no sample (field 'calibration.data')")
    spec.update(files=files, count=len(files))
    found = depfile.classify(touched, [spill.parent])
    return found.to_json()


def calibrate(prepared: Prepared, job: Any, recipe: Any) -> dict[str, Any]:
    """Write the table of `job` (trtbuild.execution.jobs.CalibrateJob) and return facts about it
    (with the inputs the samples' function read, for data = "file.py:function")."""
    program, graph, rename, source, constants, sizes = prepared
    spec, parts, spill = dict(job.samples), job.parts, Path(job.spill)
    spill.mkdir(parents=True, exist_ok=True)
    inputs = generate(spec, spill, recipe) if spec.get("generator") else None
    ranges = Ranges(job.method)
    model_inputs = {i["name"]: i["dtype"] for i in spec["inputs"]}
    later = _read_later(parts)
    made_by: dict[str, int] = {}  # boundary tensor -> the part whose spill file holds it
    spilled = 0
    for index, part in enumerate(parts):
        module, tensors = meta_part_module(program, graph, rename, part, sizes)
        names = _value_names(module.graph, [t["name"] for t in part["outputs"]])
        weights = PartWeights(source, constants)

        def observe(node: fx.Node, values: list[Any], names: dict[str, str] = names) -> None:
            value = values[0]
            if isinstance(value, torch.Tensor) and value.is_floating_point():
                ranges.add(names.get(node.name, node.name), value)

        for k in range(spec["count"]):
            feeds = sample(spec, k) if index == 0 or _needs_inputs(tensors, model_inputs) else {}
            if index == 0:
                for name, array in feeds.items():
                    if model_inputs[name] in checkdata.FLOAT_DTYPES:
                        ranges.add(name, array)
            for j in sorted({made_by[t["name"]] for t in tensors if t["name"] in made_by}):
                with np.load(spill / f"{j}-{k}.npz", allow_pickle=False) as held:
                    feeds.update({n: held[n] for n in held.files})
            args = [
                torch.from_numpy(np.asarray(feeds[t["name"]])).to(torch_dtype(t["dtype"]))
                for t in tensors
            ]
            outs, _ = run_graph(module.graph, weights.load, torch.float32, [args], observe)
            keep = {
                t["name"]: _numpy(v)
                for t, v in zip(part["outputs"], outs[0])
                if t["name"] in later[index] and isinstance(v, torch.Tensor)
            }
            if keep:
                path = spill / f"{index}-{k}.npz"
                np.savez(path, **keep)  # type: ignore[arg-type]
                spilled = max(spilled, path.stat().st_size)
        made_by.update({t["name"]: index for t in part["outputs"] if t["name"] in later[index]})
        del weights
        for j in set(made_by.values()):  # spill files no later part reads
            if not any(made_by.get(n) == j for n in later[index]):
                for stale in spill.glob(f"{j}-*.npz"):
                    stale.unlink()
    table = {
        "format": TABLE_FORMAT,
        "method": job.method,
        "samples": spec["count"],
        "tensors": ranges.table(),
    }
    Path(job.table).write_text(json.dumps(table, indent=1, sort_keys=True) + "\n")
    facts = {"tensors": len(table["tensors"]), "samples": spec["count"], "spill_bytes": spilled}
    return {**facts, "inputs": inputs} if inputs else facts


def _value_names(graph: fx.Graph, outputs: list[str]) -> dict[str, str]:
    """Node name -> OpGraph name: a part's outputs carry the model's names (the rest already do)."""
    node = next(n for n in graph.nodes if n.op == "output")
    values = node.args[0] if isinstance(node.args[0], (tuple, list)) else [node.args[0]]
    return {v.name: name for v, name in zip(values, outputs) if isinstance(v, fx.Node)}


def _read_later(parts: list[dict[str, Any]]) -> list[set[str]]:
    """Per part index: the tensors parts after it read."""
    out, later = [], set[str]()
    for part in reversed(parts):
        out.append(set(later))
        later |= {t["name"] for t in part["inputs"]}
    return out[::-1]


def _needs_inputs(tensors: list[dict[str, Any]], model_inputs: dict[str, str]) -> bool:
    return any(t["name"] in model_inputs for t in tensors)


def _numpy(value: torch.Tensor) -> np.ndarray:
    value = value.detach()
    return (value.float() if value.is_floating_point() else value).contiguous().numpy()
