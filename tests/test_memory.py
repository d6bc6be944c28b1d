"""The memory model's fit, on peaks measured here (benchmarks/memory_model.py)."""

from __future__ import annotations

from trtbuild.memory import ONNXRUNTIME, Observation, fit

MiB = 1 << 20


def build(weights_mib: float, peak_mib: float) -> Observation:
    return Observation("build", "onnxruntime", int(weights_mib * MiB), 0, int(peak_mib * MiB))


def test_a_light_model_never_lowers_the_per_byte_factor_for_the_next() -> None:
    """ONNX Runtime held 85 MiB building ResNet-50 fp32 (98 MiB of weights) and 74 MiB at fp16;
    a slope fitted to those alone predicted 174 MiB for BERT-base, which measured 916 MiB."""
    resnet = [build(97.7, 85), build(48.8, 74)]
    fitted = fit(ONNXRUNTIME.build, resnet)
    assert fitted.alpha >= ONNXRUNTIME.build.alpha
    assert fitted.predict(int(415.4 * MiB)) >= 916 * MiB
    for o in resnet:  # and it still covers what it was fitted to
        assert fitted.predict(o.weight_bytes) >= o.peak_bytes


def test_the_fixed_cost_is_at_least_the_lightest_process_seen() -> None:
    """Tiny parts' builders measured 62 MiB: a model fitted to big parts only must not predict
    a few MiB for a tiny one."""
    fitted = fit(ONNXRUNTIME.build, [build(97.7, 85), build(0.4, 62)])
    assert fitted.predict(0) >= 62 * MiB
    assert fit(ONNXRUNTIME.build, []) == ONNXRUNTIME.build
