"""One atomic write for every file beside the database: all or nothing, durable once it returns."""

from __future__ import annotations

import errno
import hashlib
import os
from pathlib import Path

import pytest

from ecg_atlas import atomic


@pytest.fixture
def events(monkeypatch):
    """What reached the disk, in order: ("fsync", path) and ("replace", src, dst)."""
    seen = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        seen.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src, dst):
        seen.append(("replace", os.fspath(src), os.fspath(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    return seen


def test_write_atomic_fsyncs_the_file_renames_it_then_fsyncs_the_directory(tmp_path, events):
    target = tmp_path / "probe.json"
    target.write_text("old")
    digest = atomic.write_atomic(target, lambda tmp: Path(tmp).write_text("new contents"))
    assert target.read_text() == "new contents"
    assert digest == hashlib.sha256(b"new contents").hexdigest()
    tmp = str(tmp_path / ("probe.json" + atomic.TMP_SUFFIX))
    assert events == [("fsync", tmp), ("replace", tmp, str(target)), ("fsync", str(tmp_path))]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["probe.json"]


@pytest.mark.parametrize("fails_in", ["write", "fsync"])
def test_a_failed_write_leaves_the_old_file_and_no_temporary_file(tmp_path, monkeypatch, fails_in):
    target = tmp_path / "index.json"
    target.write_text("old")

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("half")
        if fails_in == "write":
            raise OSError(errno.ENOSPC, "No space left on device")

    if fails_in == "fsync":
        def full_disk(fd):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError) as raised:
        atomic.write_atomic(target, write)
    assert raised.value.errno == errno.ENOSPC  # the caller sees the OS's own error
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["index.json"]


def test_replace_durably_moves_a_complete_file_with_the_same_fsyncs(tmp_path, events):
    complete, target = tmp_path / "fresh.duckdb", tmp_path / "store.duckdb"
    complete.write_bytes(b"compacted")
    target.write_bytes(b"old")
    atomic.replace_durably(complete, target)
    assert target.read_bytes() == b"compacted" and not complete.exists()
    assert events == [("fsync", str(complete)), ("replace", str(complete), str(target)), ("fsync", str(tmp_path))]


def test_sha256_file_matches_the_digest_write_atomic_returned(tmp_path):
    payload = os.urandom(atomic.HASH_CHUNK + 123)  # more than one chunk
    digest = atomic.write_atomic(tmp_path / "index.faiss", lambda tmp: Path(tmp).write_bytes(payload))
    assert atomic.sha256_file(tmp_path / "index.faiss") == digest == hashlib.sha256(payload).hexdigest()
