"""Discovered inputs: how touched files become files, distributions and nothing."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import psutil

from trtbuild.model.depfile import Touched, classify


def test_a_package_s_metadata_read_pins_its_distribution_not_its_files(tmp_path: Path) -> None:
    metadata = importlib.metadata.distribution("psutil").locate_file("")
    dist_info = next(Path(str(metadata)).glob("psutil-*.dist-info"))
    module = tmp_path / "model.py"
    module.write_text("x = 1\n")
    touched = Touched(
        files={str(dist_info / "METADATA"), str(dist_info / "RECORD"), psutil.__file__, str(module)}
    )
    found = classify(touched, exclude=[])
    assert found.distributions == {"psutil": importlib.metadata.version("psutil")}
    assert found.files == [str(module.resolve())]  # model code by content, no site-packages path
