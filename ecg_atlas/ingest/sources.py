"""What an ingested ECG takes from its file, the same on every path into a store (`ecg-atlas
ingest` through the server, `ecg-atlas embed --engine ray` into shards): the source URI it is
stored with, and the header fields its reader found."""

from __future__ import annotations

import os

#: Reader metadata worth storing when no manifest value is given (normalised by the readers).
HEADER_FIELDS = ("age", "sex", "dx", "acquisition_time", "device")


def source_uri(path: str | os.PathLike, row: int | None = None) -> str:
    """The stored ``source`` of an ECG: its file's absolute path (made absolute without a
    realpath walk per file), ``#row`` added for one row of a multi-ECG file (HDF5)."""
    path = os.path.abspath(path)
    return path if row is None else f"{path}#{row}"


def header_metadata(recording) -> dict:
    """The ``HEADER_FIELDS`` a `Recording` holds a value for (empty values left out)."""
    return {k: recording.metadata[k] for k in HEADER_FIELDS if recording.metadata.get(k) not in (None, [], "")}
