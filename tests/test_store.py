"""The content-addressed store: verified reads, corrupt entries are misses, LRU gc with keeps."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import pytest

from trtbuild.cache import upkeep
from trtbuild.cache.store import Store


def test_blob_roundtrip_and_corruption_is_a_miss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path / "c")
    digest = store.put_bytes(b"engine bytes")
    assert digest == hashlib.sha256(b"engine bytes").hexdigest()
    assert store.verified_blob(digest) is not None
    store.put_action("k" * 64, {"blobs": {"engine": digest}, "x": 1})
    assert store.get_action("k" * 64) == {"blobs": {"engine": digest}, "x": 1}
    store.blob_path(digest).chmod(0o644)  # blobs are read-only
    store.blob_path(digest).write_bytes(b"engine bytez")
    assert store.get_action("k" * 64) is None  # blob corrupt: action is a miss
    assert not store.blob_path(digest).exists()
    assert not (tmp_path / "c" / "ac" / f"{'k' * 64}.json").exists()
    assert "corrupt" in caplog.text


def test_unreadable_action_is_a_miss(tmp_path: Path) -> None:
    store = Store(tmp_path / "c")
    (tmp_path / "c" / "ac" / "bad.json").write_text("{not json")
    assert store.get_action("bad") is None


def test_first_writer_wins(tmp_path: Path) -> None:
    store = Store(tmp_path / "c")
    store.put_action("a", {"blobs": {}, "n": 1})
    store.put_action("a", {"blobs": {}, "n": 2})
    assert store.get_action("a") == {"blobs": {}, "n": 1}


def test_gc_is_lru_and_keeps_what_is_referenced(tmp_path: Path) -> None:
    store = Store(tmp_path / "c")
    digests = [store.put_bytes(bytes([i]) * 1000) for i in range(4)]
    for age, digest in enumerate(digests):  # digests[0] is the oldest
        stamp = time.time() - 1000 + age
        os.utime(store.blob_path(digest), (stamp, stamp))
    store.put_action("uses-0", {"blobs": {"engine": digests[0]}})
    done = upkeep.gc(store, 1000, keep={digests[1]})  # kept bytes are not the cache's own to free
    assert done.evicted == [digests[0], digests[2]]
    assert (done.freed_bytes, done.own_bytes, done.held_bytes) == (2000, 1000, 1000)
    assert not store.layout.action("uses-0").exists()  # gone with its blob: verify stays clean
    assert upkeep.verify_all(store) == []
    assert store.verified_blob(digests[1]) and store.verified_blob(digests[3])


def test_verify_all_removes_corrupt(tmp_path: Path) -> None:
    store = Store(tmp_path / "c")
    good, bad = store.put_bytes(b"a"), store.put_bytes(b"b")
    store.blob_path(bad).chmod(0o644)
    store.blob_path(bad).write_bytes(b"c")
    assert upkeep.verify_all(store) == [f"blob {bad}: content does not match its digest"]
    assert store.verified_blob(good)


def test_an_action_edited_to_name_another_blob_is_a_reported_miss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = Store(tmp_path / "c")
    right, other = store.put_bytes(b"the right engine"), store.put_bytes(b"another valid blob")
    store.put_action("k" * 64, {"blobs": {"engine": right}})
    path = tmp_path / "c" / "ac" / f"{'k' * 64}.json"
    path.write_text(path.read_text().replace(right, other))
    assert upkeep.verify_all(store) == [
        f"action {'k' * 64}: altered, unreadable or names a missing blob"
    ]
    assert "does not match its key" in caplog.text
    assert store.get_action("k" * 64) is None


def test_an_action_copied_under_another_key_is_a_miss(tmp_path: Path) -> None:
    store = Store(tmp_path / "c")
    blob = store.put_bytes(b"engine")
    store.put_action("a" * 64, {"blobs": {"engine": blob}})
    ac = tmp_path / "c" / "ac"
    (ac / f"{'b' * 64}.json").write_bytes((ac / f"{'a' * 64}.json").read_bytes())
    assert store.get_action("a" * 64) == {"blobs": {"engine": blob}}
    assert store.get_action("b" * 64) is None


def test_orphaned_scratch_of_a_dead_process_is_cleaned(tmp_path: Path) -> None:
    import subprocess
    import sys

    store = Store(tmp_path / "c")
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    orphan = tmp_path / "c" / "tmp" / f"{dead}-123-job"
    orphan.mkdir()
    (orphan / "part.onnx").write_bytes(b"half")
    mine = store.scratch()
    assert store.clean_orphans() == [orphan.name]
    assert not orphan.exists() and mine.is_dir()


def test_blobs_are_read_only_and_published_without_a_second_copy(tmp_path: Path) -> None:
    store = Store(tmp_path / "c")
    engine = tmp_path / "c" / "tmp" / "made-by-a-job.onnx"
    engine.write_bytes(b"engine bytes" * 1000)
    digest = store.put_file(engine)
    assert not engine.exists()  # moved into the store, not copied
    blob = store.blob_path(digest)
    assert blob.stat().st_mode & 0o777 == 0o444
    how = store.export_blob(digest, tmp_path / "out" / "part0.onnx")
    published = tmp_path / "out" / "part0.onnx"
    assert published.read_bytes() == b"engine bytes" * 1000
    if how == "hardlink":
        assert published.stat().st_ino == blob.stat().st_ino
    else:
        assert how == "reflink"  # this machine's filesystem has no reflinks; others may


def test_locks_of_keys_with_a_common_prefix_are_independent(tmp_path: Path) -> None:
    """Graph manifests share a long prefix: their locks must not (they did, at key[:16])."""
    import threading

    store = Store(tmp_path / "c")
    held = threading.Event()
    with store.locked("graph-manifest-" + "a" * 64):
        thread = threading.Thread(target=lambda: _hold(store, "graph-manifest-" + "b" * 64, held))
        thread.start()
        assert held.wait(5), "the second lock waited for the first"
    thread.join()


def _hold(store: Store, key: str, held: object) -> None:
    with store.locked(key):
        held.set()  # type: ignore[attr-defined]
