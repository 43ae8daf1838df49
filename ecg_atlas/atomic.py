"""Atomic, durable file writes: a reader sees the old file or the new one, never a part of one,
and a file this module wrote survives a crash or power cut once the call returns.

Every file the store and the analysis layer write beside the database goes through
`write_atomic`: the search index and its index.json, probes, cluster runs, baseline caches.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

#: Bytes read at a time when hashing a file.
HASH_CHUNK = 4 << 20
#: What a file being written is called until it is complete: `<name>.tmp`, beside it.
TMP_SUFFIX = ".tmp"


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> str:
    """Make `path` hold what `write(tmp_path)` writes, all or nothing; returns its sha256.

    `write` fills a temporary file beside `path` (same directory, so the rename cannot cross a
    file system). The bytes are hashed and fsynced, the file is renamed over `path`, and the
    directory is fsynced so the rename itself is durable. On any failure the temporary file is
    removed, `path` is left as it was, and the error propagates unchanged.
    """
    path = Path(path)
    tmp = path.with_name(path.name + TMP_SUFFIX)
    try:
        write(str(tmp))
        digest = hashlib.sha256()
        with open(tmp, "rb+") as f:
            while chunk := f.read(HASH_CHUNK):
                digest.update(chunk)
            os.fsync(f.fileno())
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return digest.hexdigest()


def replace_durably(complete: str | os.PathLike, path: str | os.PathLike) -> None:
    """Rename a file someone else wrote in full (e.g. DuckDB's compacted copy) over `path`,
    with the same fsyncs as `write_atomic`."""
    with open(complete, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(complete, path)
    _fsync_dir(Path(path).parent)


def _fsync_dir(directory: str | os.PathLike) -> None:
    """Make the directory's entries (renames, new names) durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
