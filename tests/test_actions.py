"""Action keys: an explicit field list, canonical JSON, stable across processes and hash seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from trtbuild.orchestrate.actions import KEY_FIELDS, action_key, explain, field_digests

BASE: dict[str, Any] = {
    "schema": 3,
    "graph": [
        {
            "name": "conv2d",
            "target": "aten.conv2d.default",
            "args": "[%x,%w,None,[1, 1]]",
            "inputs": ["x"],
            "weights": ["w"],
            "outputs": [["conv2d", [1, 8, 4, 4], "float32"]],
        }
    ],
    "weights": {"w": "ab" * 32},
    "io": {
        "inputs": [["x", [1, 3, 4, 4], "float32"]],
        "outputs": [["conv2d", [1, 8, 4, 4], "float32"]],
    },
    "precision": "fp32",
    "settings": {"opset": 18},
    "toolchain": {"torch": "2.13.0", "onnx": "1.23.2"},
    "device": {"backend": "onnxruntime", "onnxruntime": "1.32.0", "device": "cpu-x86_64-avx2"},
}

CHANGES: dict[str, Any] = {
    "schema": 4,
    "graph": [{**BASE["graph"][0], "args": "[%x,%w,None,[2, 2]]"}],
    "weights": {"w": "cd" * 32},
    "io": {"inputs": [["x", [2, 3, 4, 4], "float32"]], "outputs": BASE["io"]["outputs"]},
    "precision": "fp16",
    "settings": {"opset": 19},
    "toolchain": {"torch": "2.14.0", "onnx": "1.23.2"},
    "device": {**BASE["device"], "device": "cpu-x86_64-avx512f"},
}


def test_every_field_is_listed_and_tested() -> None:
    assert tuple(BASE) == KEY_FIELDS
    assert set(CHANGES) == set(KEY_FIELDS)


@pytest.mark.parametrize("field", KEY_FIELDS)
def test_key_changes_with_each_field(field: str) -> None:
    changed = {**BASE, field: CHANGES[field]}
    assert action_key(changed) != action_key(BASE)
    assert explain(field_digests(BASE), field_digests(changed)).startswith(
        f"would rebuild: {field} changed"
    )


def test_key_ignores_dict_order() -> None:
    shuffled = {**BASE, "device": dict(reversed(list(BASE["device"].items())))}
    assert action_key(shuffled) == action_key(BASE)


def test_key_is_the_same_in_other_processes_and_hash_seeds() -> None:
    code = (
        "import json, sys; from trtbuild.orchestrate.actions import action_key; "
        "print(action_key(json.loads(sys.stdin.read())))"
    )
    keys = set()
    for seed in ("0", "1", "12345", "random"):
        proc = subprocess.run(
            [sys.executable, "-c", code],
            input=json.dumps(BASE),
            text=True,
            capture_output=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        )
        keys.add(proc.stdout.strip())
    assert keys == {action_key(BASE)}


def test_explain_without_lock() -> None:
    assert explain(None, field_digests(BASE)) == "would build: not in the lock file"
    assert explain(field_digests(BASE), field_digests(BASE)) == "up to date"
