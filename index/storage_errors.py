"""What a refused write means: an OS error (ENOSPC and others) that DuckDB, FAISS or Python
reported, told apart from every other failure and turned into `StorageFullError` (reason
``disk_full``) or `StorageUnavailableError` (``storage_error``); and whether DuckDB gave up on
its database instance after it (the store must reopen it)."""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from contextlib import contextmanager

import duckdb

from ecg_atlas.errors import StorageError, StorageFullError, StorageUnavailableError, without_paths

# The store's logger: an operator follows a store's life, its refused writes included, under one name.
log = logging.getLogger("ecg_atlas.index.store")

_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
_FULL_TEXT = ("no space left on device", "disk quota exceeded")
_OS_WRITE_TEXT = ("could not write file", "could not truncate file", "could not fsync", "could not open file",
                  "read-only file system", "input/output error", "permission denied")
_RUN_AGAIN = {
    StorageFullError: "no space left on the store's disk: free space there, then run it again",
    StorageUnavailableError: "the store's disk refused the write (the server log has the operating system's "
                             "error); run it again later",
}
#: How far back the chain of exceptions (raised while handling another) is looked through.
_CHAIN = 4


def storage_error(exc: BaseException, doing: str) -> StorageError | None:
    """The StorageError for an OS write failure (ENOSPC and others) that DuckDB, FAISS or Python
    reported while `doing`, logged at ERROR with the OS error (file names cut to their last part:
    no log line above DEBUG says where the store lives); None when `exc` is something else.

    DuckDB wraps the OS error in its own exception text (TransactionException "Failed to commit:
    Could not write file ...: No space left on device", IOException, or FatalException when a
    checkpoint failed); a failed ROLLBACK after it is looked through to the error it hides."""
    if isinstance(exc, StorageError):
        return exc
    seen: list[BaseException] = []
    while exc is not None and len(seen) < _CHAIN:
        seen.append(exc)
        exc = exc.__context__
    for candidate in seen:
        text = str(candidate).lower()
        number = candidate.errno if isinstance(candidate, OSError) else None
        if number in _FULL_ERRNOS or any(t in text for t in _FULL_TEXT):
            log.error("%s failed: no space left on the store's disk (%s)", doing,
                      without_paths(str(candidate)))
            error: StorageError = StorageFullError()
        elif (isinstance(candidate, OSError) and number is not None) or (
                isinstance(candidate, (duckdb.Error, RuntimeError)) and any(t in text for t in _OS_WRITE_TEXT)):
            log.error("%s failed: the store's disk refused the write (%s)", doing,
                      without_paths(str(candidate)))
            error = StorageUnavailableError()
        else:
            continue
        error.__cause__ = candidate
        return error
    return None


@contextmanager
def refused_writes(doing: str) -> Iterator[None]:
    """Around files written beside the store (probes, cluster runs, caches): an OS error raised
    inside becomes the StorageError ``storage_error`` gives (disk_full / storage_error, logged as it
    logs), so a full disk answers RESOURCE_EXHAUSTED as ingest does instead of INTERNAL. Only
    OSError is looked at: a refusal that is already an AtlasError passes through unchanged."""
    try:
        yield
    except OSError as exc:
        error = storage_error(exc, doing)
        if error is None:
            raise
        # the default messages speak of resending ECGs; this is a computation to run again
        raise type(error)(_RUN_AGAIN[type(error)]) from exc


def invalidated(exc: BaseException) -> bool:
    """Whether DuckDB gave up on its database instance (a fatal error): it must be reopened."""
    for _ in range(_CHAIN):  # the error, and what it was raised while handling
        if exc is None:
            break
        if isinstance(exc, duckdb.FatalException) or "invalidated" in str(exc):
            return True
        exc = exc.__context__
    return False
