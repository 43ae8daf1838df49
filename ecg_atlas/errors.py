"""Errors shared by every part of ECG Atlas.

Each one is raised with a message that tells the person what was wrong with *their* input and
what to do about it, and carries a short machine-readable ``reason`` (``too_short``,
``bad_metadata``, ``disk_full``...) that the server puts on the wire beside the status code.
"""


class AtlasError(Exception):
    """Base class of every error ECG Atlas raises on purpose."""

    reason = "invalid_request"
    #: the figures that explain the error (e.g. duration_s and minimum_s), sent with the reason
    details: dict = {}


class InvalidECGError(AtlasError, ValueError):
    """An ECG that cannot be read or preprocessed (corrupt file, NaNs, missing leads, too short...).

    ``reason`` is a short machine-readable code (``too_short``, ``too_few_leads``, ``unreadable``...)
    that summaries and the service's per-item errors group by; the message is for the person.
    """

    def __init__(self, message: str, reason: str = "invalid_ecg", details: dict | None = None):
        super().__init__(message)
        self.reason = reason
        self.details = details or {}


class CheckpointError(AtlasError, ValueError):
    """A file that is not a usable ECG-FM checkpoint (wrong format, truncated, mismatched shapes)."""

    reason = "bad_checkpoint"


class StoreError(AtlasError):
    """The vector store refused an operation (mixed encoders, bad filter, unknown id...)."""

    reason = "store_refused"


class MetadataError(StoreError):
    """Metadata that does not fit the store's schema (bad key, a value of the wrong type)."""

    reason = "bad_metadata"


class FilterError(StoreError):
    """A search or cohort filter the store cannot apply (unknown column, operator, type, size)."""

    reason = "bad_filter"


class NotFoundError(StoreError, KeyError):
    """An ecg_id (or other named object) that the store does not hold."""

    reason = "not_found"

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class EncoderMismatchError(StoreError):
    """Vectors from another encoder (model, checkpoint, preprocessing or dimension) than the store's."""

    reason = "encoder_mismatch"


class SignalUnavailableError(AtlasError):
    """A stored ECG whose signal this server cannot serve: the store kept no copy and no data root
    holds its source. One message whatever exists on the disk (paths are never probed for a client)."""

    reason = "signal_unavailable"


class StorageError(StoreError):
    """The store's disk refused a write (full, read-only, I/O error). What was acknowledged before
    is kept, reads go on, and writing works again once the cause is gone.

    ``reason`` is ``disk_full`` or ``storage_error``; the message names no path (the server log
    carries the operating system's error for the operator).
    """

    def __init__(self, message: str, reason: str = "storage_error"):
        super().__init__(message)
        self.reason = reason


class StorageFullError(StorageError):
    """No space left on the store's disk (ENOSPC / EDQUOT)."""

    def __init__(self, message: str = "no space left on the store's disk: free space there, then resend "
                                      "(ids already stored are skipped)"):
        super().__init__(message, reason="disk_full")


class StorageUnavailableError(StorageError):
    """Another operating-system write error (read-only filesystem, I/O error, permissions...)."""

    def __init__(self, message: str = "the store's disk refused the write (the server log has the operating "
                                      "system's error); retry later (ids already stored are skipped)"):
        super().__init__(message, reason="storage_error")
