from __future__ import annotations

import pytest

from trtbuild.recipe.sizes import format_size, parse_size


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512MiB", 512 << 20),
        ("2GiB", 2 << 30),
        ("1.5G", 1_500_000_000),
        ("1024", 1024),
        (4096, 4096),
        ("3 kb", 3000),
        ("1TiB", 1 << 40),
    ],
)
def test_parse(text: str | int, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "2XB", "-1GiB", "GiB", "0", 0, True, "1..5G"])
def test_parse_rejects(text: str | int) -> None:
    with pytest.raises(ValueError, match="expected"):
        parse_size(text)


def test_format() -> None:
    assert format_size(1536 << 20) == "1.50 GiB"
    assert format_size(12) == "12 B"
