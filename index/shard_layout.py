"""The embedding shard format: the Parquet columns a bulk embedding job writes
(``ecg_atlas/bulk/shards.py``) and a store imports (`shard_rows`, `importer`), in one place.

One row per input ECG, in input order:

==================  =======================================================================
ecg_id              the id the ECG is stored under
status              ``embedded`` or ``refused``
reason, message     a refusal's reason code (``too_short``, ``unreadable`` ...) and its text
source              the file it was read from (``path#row`` for an HDF5 row), as Ingest stores it
patient_id          from the manifest, else null
fs, lead_names,     the recording as read (before preprocessing), as Ingest stores them
duration_s
n_segments          windows the encoder saw
record_vector       FLOAT[dim]: the mean of the segment vectors (``engine.record_vector``)
segment_vectors     FLOAT[dim][]
metadata.<key>      user metadata, typed by the store's rules (``index.schema``), one column a key
==================  =======================================================================

The Parquet schema metadata names the encoder (``ecg_atlas.<key>`` for each of `IDENTITY_KEYS`,
and ``ecg_atlas.contract``) and the shard (``ecg_atlas.shard``, ``ecg_atlas.job``).
"""

from __future__ import annotations

import pyarrow as pa

EMBEDDED, REFUSED = "embedded", "refused"
#: Shard columns holding user metadata: ``metadata.<key>``.
METADATA_PREFIX = "metadata."
#: Schema-metadata keys naming the encoder (``ecg_atlas.<key>``; the keys ``ecg-atlas embed`` writes).
IDENTITY_KEYS = ("model_id", "checkpoint_sha256", "preprocessing_version", "dim")
#: A row's outcome: the columns that say whether it was embedded, and why not.
OUTCOME_COLUMNS = ("ecg_id", "status", "reason", "message")
#: The columns stored as they are into the `ecg` table's columns of the same names, in that table's order.
STORED_FIELDS = (pa.field("ecg_id", pa.string()), pa.field("patient_id", pa.string()), pa.field("source", pa.string()),
                 pa.field("fs", pa.float64()), pa.field("lead_names", pa.list_(pa.string())),
                 pa.field("duration_s", pa.float64()), pa.field("n_segments", pa.int32()))
#: The columns every shard has, in the order a job writes them (the table above).
SHARD_COLUMNS = ("ecg_id", "status", "reason", "message", "source", "patient_id", "fs", "lead_names", "duration_s",
                 "n_segments", "record_vector", "segment_vectors")


def vector_type(dim: int) -> pa.DataType:
    """A record vector's type: FLOAT[dim]."""
    return pa.list_(pa.float32(), dim)


def segments_type(dim: int) -> pa.DataType:
    """A row's segment vectors: FLOAT[dim][]."""
    return pa.list_(vector_type(dim))


def shard_schema(dim: int) -> pa.Schema:
    """The columns every shard of `dim`-float vectors has (`SHARD_COLUMNS`), with their types."""
    types = {field.name: field.type for field in STORED_FIELDS}
    types.update(status=pa.string(), reason=pa.string(), message=pa.string(), record_vector=vector_type(dim),
                 segment_vectors=segments_type(dim))
    return pa.schema([pa.field(name, types[name]) for name in SHARD_COLUMNS])
