"""The memory model: its fit, and its prediction of a part's load (memory.Load), on peaks
measured here (benchmarks/memory_model.py, and the ONNX Runtime builds in the model's comments)."""

from __future__ import annotations

from trtbuild.memory import ONNXRUNTIME, Load, Observation, fit

MiB = 1 << 20


def build(weights_mib: float, peak_mib: float, largest_mib: float = 0.0) -> Observation:
    mib = (int(weights_mib * MiB), int(largest_mib * MiB))
    return Observation("build", "onnxruntime", mib[0], 0, int(peak_mib * MiB), mib[1])


def test_a_light_model_never_lowers_the_per_byte_factor_for_the_next() -> None:
    """Two light builds side by side (ResNet-50 at fp32 and fp16): a slope fitted to them alone
    would be near zero; the prior's stays, so a heavier model is not under-predicted."""
    resnet = [build(97.7, 68, 9.0), build(48.8, 66, 4.5)]
    fitted = fit(ONNXRUNTIME.build, resnet)
    assert fitted.alpha >= ONNXRUNTIME.build.alpha
    assert (fitted.largest, fitted.fused) == (ONNXRUNTIME.build.largest, ONNXRUNTIME.build.fused)
    for o in resnet:  # and it still covers what it was fitted to
        assert fitted.predict(o.load) >= o.peak_bytes


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
