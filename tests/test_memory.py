"""The memory model: its fit, and its prediction of a part's load (memory.Load), on peaks
measured here (benchmarks/memory_model.py, and the ONNX Runtime builds in the model's comments)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from trtbuild.planner.memory import ONNXRUNTIME, fit, memory_model
from trtbuild.planner.observations import Load, Observation, record

MiB = 1 << 20


def build(weights_mib: float, peak_mib: float, largest_mib: float = 0.0) -> Observation:
    mib = (int(weights_mib * MiB), int(largest_mib * MiB))
    return Observation("build", "onnxruntime", mib[0], 0, int(peak_mib * MiB), mib[1])


def test_a_light_model_never_lowers_the_prediction_for_the_next() -> None:
    """Two light builds (ResNet-50 at fp32 and fp16, convolutions without bias): the fitted model
    covers them and is the prior scaled up, never down, keeping what each kind of weight costs."""
    resnet = [build(97.7, 77, 9.0), build(48.8, 74, 4.5)]
    fitted = fit(ONNXRUNTIME.build, resnet)
    scale = fitted.alpha / ONNXRUNTIME.build.alpha
    assert scale >= 1.0
    assert fitted.transposed == ONNXRUNTIME.build.transposed * scale
    for o in resnet:
        assert fitted.predict(o.load) >= o.peak_bytes
    heavy = Load(415 * MiB, 89 * MiB, 0, 0, 320 * MiB)  # BERT-base
    assert fitted.predict(heavy) >= ONNXRUNTIME.build.predict(heavy)


def test_one_model_under_predicted_raises_the_others_by_its_share_only() -> None:
    """BERT's build 565 MiB, predicted 526: every prediction goes up by that share (+7%), not by
    its 39 MiB: ResNet's 77 MiB build stays within +25%."""
    fitted = fit(
        ONNXRUNTIME.build,
        [Observation("build", "onnxruntime", 415 * MiB, 0, 565 * MiB, 89 * MiB, 0, 0, 320 * MiB)],
    )
    bert = Load(415 * MiB, 89 * MiB, 0, 0, 320 * MiB)
    assert fitted.predict(bert) >= 565 * MiB
    resnet = fitted.predict(Load(98 * MiB, 9 * MiB)) / (77 * MiB) - 1
    assert 0 <= resnet <= 0.25


def test_the_fixed_cost_never_drops_below_the_prior() -> None:
    """Processes lighter than the model says (a tiny part: 62 MiB) keep the prior's fixed cost: a
    light model must not lower the next model's prediction."""
    fitted = fit(ONNXRUNTIME.build, [build(97.7, 85, 9.0), build(0.4, 40)])
    assert fitted.fixed_bytes >= ONNXRUNTIME.build.fixed_bytes
    assert fitted.predict(Load(0)) >= 62 * MiB
    assert fit(ONNXRUNTIME.build, []) == ONNXRUNTIME.build


def test_the_builder_holds_its_largest_kept_tensor_and_what_it_rewrites() -> None:
    """Peaks of ONNX Runtime builds measured here (no prepacking; benchmarks/memory_model.py):
    a 128 MiB Linear on a 2-D input 183 MiB, ResNet-50 68-77 MiB, the seed network in one engine
    (288 MiB folded, the largest 144) 635 MiB and its conv1 alone 491 MiB, BERT-base (320 MiB
    transposed, largest 89) 552 MiB, a Llama 1.1B part (1392 MiB transposed) 1602 MiB. The
    priors predict each within [-20%, +25%]."""
    measured = {
        Load(128 * MiB, 128 * MiB): 183,
        Load(98 * MiB, 9 * MiB): 77,
        Load(411 * MiB, 144 * MiB, 288 * MiB, 144 * MiB): 635,
        Load(144 * MiB, 144 * MiB, 144 * MiB, 144 * MiB): 491,
        Load(415 * MiB, 89 * MiB, 0, 0, 320 * MiB): 552,
        Load(1392 * MiB, 62 * MiB, 0, 0, 1392 * MiB): 1602,
    }
    for load, peak in measured.items():
        error = ONNXRUNTIME.build.predict(load) / (peak * MiB) - 1
        assert -0.20 <= error <= 0.25, (load, peak, error)


def test_a_shared_export_process_is_predicted_by_its_costliest_part() -> None:
    """Llama 1.1B's one export process for three parts measured 792 MiB on a base of 419: the
    part with the most weights (1.5 GiB of 64 MiB tensors) predicted 610 (-23%), the part with
    the 250 MiB embedding predicts the process within range."""
    embedding = Load(1218 * MiB, 250 * MiB, 0, 0, 968 * MiB)
    layers = Load(1584 * MiB, 64 * MiB, 0, 0, 1584 * MiB)
    export = replace(ONNXRUNTIME.export, fixed_bytes=ONNXRUNTIME.export.fixed_bytes + 419 * MiB)
    assert export.costliest([layers, embedding]) == embedding
    assert export.predict(layers) / (792 * MiB) - 1 < -0.20
    assert -0.20 <= export.predict(embedding) / (792 * MiB) - 1 <= 0.25


def test_a_model_is_fitted_to_its_own_processes_only(tmp_path: Path) -> None:
    """Llama's export measured 22% over its prediction: Llama's next plan uses that, the seed
    network's does not (at 640 MiB it could no longer be planned when it did)."""
    llama_export = Observation("export", "onnxruntime", 1352 * MiB, 234 * MiB, 755 * MiB, 250 * MiB)
    record(tmp_path, [replace(llama_export, graph="llama")])
    load = Load(144 * MiB, 144 * MiB, 144 * MiB, 144 * MiB)
    seed = memory_model("onnxruntime", tmp_path, 327 * MiB, graph="seed")
    assert seed.predict(load) == memory_model("onnxruntime", None, 327 * MiB).predict(load)
    llama = memory_model("onnxruntime", tmp_path, 234 * MiB, graph="llama")
    assert llama.export.predict(llama_export.load) >= 755 * MiB
    assert llama.source.startswith("fitted to 1 ")


def test_a_lock_written_from_a_pinned_model_does_not_wrap_its_source_again(
    recipes: Path,
) -> None:
    """Before: the lock's memory source grew by one "pinned by the lock (...)" every run."""
    from trtbuild.orchestrate.build import build
    from trtbuild.release.lockfile import lock_path, read_lock

    recipe = recipes / "tiny.toml"
    build(recipe)
    for _ in range(2):
        recipe.write_text(recipe.read_text() + "\n")  # stale: a real run, planned on the lock
        build(recipe)
    lock = read_lock(lock_path(recipe))
    assert lock is not None
    source = lock.targets[0].memory["source"]  # type: ignore[index]
    assert source.count("pinned by the lock") <= 1, source
