"""Signed release provenance: keygen, `run --release --sign`, `verify --public-key`."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from trtbuild.cli import main


def errors(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("trtbuild: error:")]


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "keys" / "release.key"
    assert main(["keygen", str(key)]) == 0
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----")
    assert Path(f"{key}.pub").read_text().startswith("-----BEGIN PUBLIC KEY-----")
    before = key.read_bytes()
    capsys.readouterr()
    assert main(["keygen", str(key)]) == 1
    err = errors(capsys.readouterr().err)
    assert len(err) == 1 and "already exists" in err[0] and str(key) in err[0]
    assert key.read_bytes() == before


def test_bad_keys_and_unreleased_builds_are_one_line_errors_before_any_build(
    recipes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = str(recipes / "tiny.toml")
    not_a_key = tmp_path / "notakey.pem"
    not_a_key.write_text("hello\n")
    cases = [
        (["--release", "--sign", str(not_a_key)], "not an unencrypted PEM private key"),
        (["--release", "--sign", str(tmp_path / "missing.key")], "cannot read the signing key"),
        (["--sign", str(not_a_key)], "only release builds are signed"),
    ]
    for extra, expected in cases:
        capsys.readouterr()
        assert main(["run", recipe, "--backend", "onnxruntime", *extra]) == 1
        err = errors(capsys.readouterr().err)
        assert len(err) == 1 and expected in err[0], err
    assert not Path("build").exists()  # nothing was built


def test_signed_provenance_verifies_and_every_alteration_is_named(
    recipes: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key, other = tmp_path / "release.key", tmp_path / "other.key"
    assert main(["keygen", str(key)]) == 0
    assert main(["keygen", str(other)]) == 0
    recipe = str(recipes / "tiny.toml")
    assert main(["run", recipe, "--backend", "onnxruntime", "--release", "--sign", str(key)]) == 0
    envelope_path = Path("build/tiny/provenance.dsse.json")
    envelope = json.loads(envelope_path.read_text())
    assert envelope["payloadType"] == "application/vnd.in-toto+json"
    payload = base64.b64decode(envelope["payload"])
    assert payload == Path("build/tiny/provenance.json").read_bytes()  # the statement's bytes

    def verify(path: Path, public: Path) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main(["verify", str(path), "--public-key", f"{public}.pub", "--no-rebuild"])
        out, err = capsys.readouterr()
        return code, out, err

    code, out, err = verify(envelope_path, key)
    assert code == 0, err
    assert "signature verifies" in err
    subjects = json.loads(payload)["subject"]
    assert out.count("matches (published; not rebuilt)") == len(subjects) >= 2

    code, _, err = verify(envelope_path, other)  # another key
    assert code == 1 and "signature check failed: signed by key" in err and "other.key" in err

    altered = tmp_path / "altered.dsse.json"
    statement = json.loads(payload)
    statement["subject"][0]["digest"]["sha256"] = "0" * 64  # a changed byte in the payload
    forged = {**envelope, "payload": base64.b64encode(json.dumps(statement).encode()).decode()}
    altered.write_text(json.dumps(forged))
    code, _, err = verify(altered, key)
    assert code == 1 and "signature does not verify" in err and "altered.dsse.json" in err
    assert len(errors(err)) == 1

    signature = bytearray(base64.b64decode(envelope["signatures"][0]["sig"]))
    signature[0] ^= 1  # a changed byte in the signature
    forged = {
        **envelope,
        "signatures": [
            {**envelope["signatures"][0], "sig": base64.b64encode(bytes(signature)).decode()}
        ],
    }
    altered.write_text(json.dumps(forged))
    code, _, err = verify(altered, key)
    assert code == 1 and "signature does not verify" in err

    engine = Path("build/tiny/resnet_tiny/fp32/part0.ort.onnx")  # a changed byte in an engine
    engine.chmod(0o644)  # published engines are read-only
    data = bytearray(engine.read_bytes())
    data[-1] ^= 1
    engine.write_bytes(bytes(data))
    code, out, err = verify(envelope_path, key)
    assert code == 1 and "signature verifies" in err
    assert "resnet_tiny/fp32/part0.ort.onnx: MISMATCH: published file was altered" in out
    assert "resnet_tiny/fp16/part0.ort.onnx: matches" in out
