"""Signed release provenance: Ed25519 keys and DSSE envelopes around the in-toto statement.

    trtbuild keygen release.key                      # release.key (0600) and release.key.pub
    trtbuild run R.toml --release --sign release.key # build/<recipe>/provenance.dsse.json
    trtbuild verify build/<recipe>/provenance.dsse.json --public-key release.key.pub

The envelope is DSSE v1 (github.com/secure-systems-lab/dsse): the payload is the exact bytes of
provenance.json, and the signature is over PAE(payloadType, payload) =
"DSSEv1 <len(type)> <type> <len(payload)> <payload>", so a signature cannot be moved to another
payload type. `keyid` is the sha256 of the raw public key. The cryptography is `cryptography`'s
Ed25519; nothing here is home-made but the PAE framing the spec defines.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from pathlib import Path
from typing import Any

from trtbuild.cache.atomic import write_text
from trtbuild.errors import TrtbuildError

PAYLOAD_TYPE = "application/vnd.in-toto+json"


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %b %d %b" % (len(kind), kind, len(payload), payload)


def check_key(key: Path | None, release: bool) -> None:
    """A signing key, if any, is for a release build and loads: checked before anything is built."""
    if key is None:
        return
    if not release:
        raise TrtbuildError(f"--sign {key}: only release builds are signed; add --release")
    load_private_key(key)


def keygen(path: Path) -> Path:
    """Write a new Ed25519 private key at `path` (PEM, mode 0600) and its public key beside it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = path.with_name(path.name + ".pub")
    for existing in (path, public):
        if existing.exists():
            raise TrtbuildError(f"{existing}: already exists; not overwriting a key")
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    public_pem = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private_pem)
    public.write_bytes(public_pem)
    return public


def load_private_key(path: Path) -> Any:
    """The Ed25519 private key at `path`, or a one-line error saying what is wrong with it."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except OSError as exc:
        raise TrtbuildError(f"{path}: cannot read the signing key: {exc.strerror}") from None
    except (ValueError, TypeError):
        raise TrtbuildError(
            f"{path}: not an unencrypted PEM private key (trtbuild keygen writes one)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise TrtbuildError(f"{path}: expected an Ed25519 key (trtbuild keygen), got another kind")
    return key


def load_public_key(path: Path) -> Any:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    try:
        key = serialization.load_pem_public_key(path.read_bytes())
    except OSError as exc:
        raise TrtbuildError(f"{path}: cannot read the public key: {exc.strerror}") from None
    except ValueError:
        raise TrtbuildError(f"{path}: not a PEM public key (trtbuild keygen writes one)") from None
    if not isinstance(key, Ed25519PublicKey):
        raise TrtbuildError(f"{path}: expected an Ed25519 public key, got another kind")
    return key


def keyid(public_key: Any) -> str:
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def envelope_path(statement: Path) -> Path:
    """Where the signed envelope of `statement` goes: provenance.json -> provenance.dsse.json."""
    return statement.with_name(statement.stem + ".dsse.json")


def sign_file(statement: Path, key_path: Path) -> Path:
    """Sign the statement's exact bytes; the envelope goes beside it as <stem>.dsse.json."""
    key = load_private_key(key_path)
    payload = statement.read_bytes()
    envelope = {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode(),
        "signatures": [
            {
                "keyid": keyid(key.public_key()),
                "sig": base64.b64encode(key.sign(pae(PAYLOAD_TYPE, payload))).decode(),
            }
        ],
    }
    out = envelope_path(statement)
    write_text(out, json.dumps(envelope, indent=2) + "\n")
    return out


def is_envelope(data: Any) -> bool:
    return isinstance(data, dict) and "payloadType" in data and "signatures" in data


def open_envelope(path: Path, data: dict[str, Any], public_key_path: Path | None) -> bytes:
    """The payload of a DSSE envelope once its signature verifies with the public key."""
    from cryptography.exceptions import InvalidSignature

    if public_key_path is None:
        raise TrtbuildError(f"{path}: a signed envelope; pass --public-key to check its signature")
    public = load_public_key(public_key_path)
    try:
        payload_type = str(data["payloadType"])
        payload = base64.b64decode(data["payload"], validate=True)
        signatures = [
            (str(s.get("keyid", "")), base64.b64decode(s["sig"], validate=True))
            for s in data["signatures"]
        ]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise TrtbuildError(f"{path}: not a DSSE envelope ({exc})") from None
    if payload_type != PAYLOAD_TYPE:
        raise TrtbuildError(f"{path}: payloadType is {payload_type!r}, expected {PAYLOAD_TYPE!r}")
    ours = keyid(public)
    if signatures and all(kid and kid != ours for kid, _ in signatures):
        names = ", ".join(kid[:12] for kid, _ in signatures)
        raise TrtbuildError(
            f"{path}: signature check failed: signed by key {names}, not by {public_key_path} "
            f"({ours[:12]})"
        )
    for _, signature in signatures:
        try:
            public.verify(signature, pae(payload_type, payload))
            return payload
        except InvalidSignature:
            continue
    raise TrtbuildError(
        f"{path}: signature check failed: the signature does not verify with {public_key_path} "
        "(payload or signature altered)"
    )
