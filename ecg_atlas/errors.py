"""Errors shared by every part of ECG Atlas.

Each one is raised with a message that tells the person what was wrong with *their* input and
what to do about it, and carries a short machine-readable ``reason`` (``too_short``,
``bad_metadata``, ``disk_full``...) that the server puts on the wire beside the status code.
"""

import re


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


class MetadataLimitError(MetadataError):
    """Metadata past the store's schema limits: more keys in one ECG than ``max_metadata_keys``
    (reason ``too_many_metadata_keys``) or more user columns than ``max_metadata_columns`` (reason
    ``too_many_columns``); ``details`` holds the counts and the limit."""

    def __init__(self, message: str, reason: str, details: dict | None = None):
        super().__init__(message)
        self.reason = reason
        self.details = details or {}


class ShardError(StoreError):
    """An embedding shard an import cannot use: damaged (``shard_checksum_mismatch``), unreadable
    (``shard_unreadable``), not a shard (``not_a_shard``), or holding an ECG twice
    (``duplicate_ecg_ids``). The import is one transaction: nothing of it is stored."""

    def __init__(self, message: str, reason: str = "shard_unreadable"):
        super().__init__(message)
        self.reason = reason


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


class TrainingDataError(AtlasError):
    """Labelled ECGs a fine-tuning run refuses to train on (`ecg_atlas.finetune.sources`), with a
    ``reason``: ``too_few_positives`` (a label under ``--min-positives`` in train or val),
    ``empty_split``, ``overlapping_splits`` (a record or a patient in two splits),
    ``no_matching_records`` (no ECG file matches a manifest row) or ``no_readable_records``;
    ``details`` holds the counts."""

    def __init__(self, message: str, reason: str = "bad_training_data", details: dict | None = None):
        super().__init__(message)
        self.reason = reason
        self.details = details or {}


class DeviceError(AtlasError, ValueError):
    """A device that is not ``auto``, ``cpu``, ``cuda`` or ``cuda:N``, or a ``cuda:N`` past the
    GPUs that are visible (`ecg_atlas.devices`)."""

    reason = "bad_device"


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


#: An absolute path inside an error text: quoted (DuckDB: "...", Python: '...') or bare.
_QUOTED_PATH = re.compile(r"""(["'])(/[^"'\n]*)\1""")
_BARE_PATH = re.compile(r"(?<![\w.~/:-])(?:/[^\s\"'/:,;()<>\[\]]+)+/?")


def without_paths(text: str) -> str:
    """`text` (a library's or the OS's error message) with every absolute path cut to its last
    part: ``Could not write file "/srv/atlas/store.duckdb.wal": No space left on device`` becomes
    ``Could not write file "store.duckdb.wal": ...``. What is left names the file, never where
    the server keeps it, so it may go into a log line above DEBUG."""
    text = _QUOTED_PATH.sub(lambda m: m[1] + _last_part(m[2]) + m[1], text)
    return _BARE_PATH.sub(lambda m: _last_part(m[0]), text)


def _last_part(path: str) -> str:
    return path.rstrip("/").rsplit("/", 1)[-1] or "/"
