"""The store's columns: the fixed per-ECG fields and the typed user-metadata columns.

User metadata columns are created on first use with a type inferred from the first value
(numbers, strings, booleans, timestamps, label lists). Later values are coerced to that type or
refused with a message saying which key, which type the store holds and what was sent.

The schema is bounded, so that one request cannot grow it without end: an ECG carries at most
``MAX_METADATA_KEYS`` keys and a store at most ``MAX_METADATA_COLUMNS`` user columns (both
configurable: ``Store.open``, ``ecg-atlas serve --max-metadata-keys / --max-metadata-columns``).
Real metadata sources are far below them: the manifests of the shared sample data have 26 and 28
fields besides the record id, PTB-XL's and MIMIC-IV-ECG's own tables about 30 each; 64 keys per
ECG leave room for any one of them with derived fields, 256 columns for several side by side.
Columns cost every write and read, even empty ones (2 cores, 768-d vectors, upserts of 64 ECGs
with 4 fields): 256 extra columns cost nothing measurable (22-28 ms an upsert, 10 ms a Get),
1,024 make an upsert 2.5x and a Get 4.6x slower, 4,096 36x and 53x. A store at its column
limit first drops the user columns no stored ECG holds a value in (all their ECGs deleted).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa

from ecg_atlas.errors import MetadataError, MetadataLimitError

#: DuckDB types a user-metadata column can have.
TYPE_BIGINT = "BIGINT"
TYPE_DOUBLE = "DOUBLE"
TYPE_TEXT = "VARCHAR"
TYPE_BOOL = "BOOLEAN"
#: Times are stored as UTC TIMESTAMP (TIMESTAMPTZ would need pytz to read back in Python).
TYPE_TIME = "TIMESTAMP"
TYPE_LABELS = "VARCHAR[]"

#: Fixed columns a caller may read and filter on (vectors are read through `get`, never filtered).
BASE_COLUMNS: dict[str, str] = {
    "ecg_id": TYPE_TEXT,
    "patient_id": TYPE_TEXT,
    "source": TYPE_TEXT,
    "fs": TYPE_DOUBLE,
    "lead_names": TYPE_LABELS,
    "duration_s": TYPE_DOUBLE,
    "n_segments": "INTEGER",
    "model_id": TYPE_TEXT,
    "checkpoint_sha256": TYPE_TEXT,
    "preprocessing_version": TYPE_TEXT,
    "ingested_at": TYPE_TIME,
}
VECTOR_COLUMNS = ("record_vector", "segment_vectors")
#: Internal columns: never offered to callers as metadata.
INTERNAL_COLUMNS = ("seq",)
RESERVED_NAMES = frozenset(BASE_COLUMNS) | frozenset(VECTOR_COLUMNS) | frozenset(INTERNAL_COLUMNS)

#: Longest user-metadata column name.
MAX_NAME_LENGTH = 63
#: Longest name of a stored analysis result (a probe, a cluster run, a web-atlas cohort): it becomes
#: part of file names and of column names (``cluster_<run>_outlier``, ``cohort_<name>``) that must
#: stay within MAX_NAME_LENGTH.
MAX_RESULT_NAME_LENGTH = 40


def name_rule(max_length: int = MAX_NAME_LENGTH) -> re.Pattern[str]:
    """The one rule for a name that becomes a column name or part of one: a lowercase letter, then
    lowercase letters, digits or '_', at most `max_length` characters in all."""
    return re.compile(rf"^[a-z][a-z0-9_]{{0,{max_length - 1}}}$")


_NAME_RE = name_rule()

#: Metadata keys one ECG may carry (module docstring).
MAX_METADATA_KEYS = 64
#: User metadata columns one store may hold (module docstring).
MAX_METADATA_COLUMNS = 256


@dataclass(frozen=True)
class Column:
    """One readable column: its name, its DuckDB type, and whether callers may write it."""

    name: str
    type: str
    user: bool


def table_ddl(dim: int) -> str:
    """The `ecg` table; user metadata columns are appended by ALTER TABLE on first use."""
    base = ",\n    ".join(f'"{name}" {typ}' for name, typ in BASE_COLUMNS.items())
    return (
        "CREATE TABLE IF NOT EXISTS ecg (\n"
        "    seq BIGINT NOT NULL,\n"
        f"    {base},\n"
        f"    record_vector FLOAT[{dim}] NOT NULL,\n"
        f"    segment_vectors FLOAT[{dim}][]\n"
        ")"
    )


def check_metadata_name(name: str) -> str:
    """A user metadata key must be a plain lowercase identifier that is not a fixed column."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise MetadataError(
            f"metadata key {name!r} is not usable as a column name: use lowercase letters, digits "
            f"and '_', starting with a letter, at most {MAX_NAME_LENGTH} characters (e.g. 'age', 'labels_scp')"
        )
    if name in RESERVED_NAMES:
        raise MetadataError(
            f"metadata key {name!r} is a fixed store field; set it through the ingest fields, "
            f"or pick another name for user metadata"
        )
    return name


def check_key_count(row: Mapping[str, object], limit: int) -> None:
    """Refuse an ECG's metadata with more than `limit` keys (reason ``too_many_metadata_keys``)."""
    if len(row) > limit:
        raise MetadataLimitError(
            f"this ECG has {len(row)} metadata keys; at most {limit} per ECG (the server's "
            f"--max-metadata-keys): send fewer fields", reason="too_many_metadata_keys",
            details={"keys": len(row), "max_keys": limit})


def refuse_new_columns(new: Sequence[str], held: int, limit: int) -> MetadataLimitError:
    """The error for `new` keys that would take a store holding `held` user columns past `limit`."""
    shown = ", ".join(repr(k) for k in list(new)[:5]) + (" …" if len(new) > 5 else "")
    return MetadataLimitError(
        f"the store holds {held} metadata columns and its limit is {limit} (the server's "
        f"--max-metadata-columns); these ECGs would add {len(new)} more ({shown}): use existing keys "
        f"(columns that no stored ECG holds a value in any more are dropped to make room)",
        reason="too_many_columns", details={"columns": held, "new_columns": len(new), "max_columns": limit})


def infer_type(name: str, value: object) -> str:
    """The column type a first value implies (bool before int: bool is an int in Python)."""
    if isinstance(value, bool):
        return TYPE_BOOL
    if isinstance(value, int):
        return TYPE_BIGINT
    if isinstance(value, float):
        return TYPE_DOUBLE
    if isinstance(value, str):
        return TYPE_TEXT
    if isinstance(value, dt.datetime):
        return TYPE_TIME
    if isinstance(value, Sequence) and not isinstance(value, (bytes, bytearray)):
        if all(isinstance(v, str) for v in value):
            return TYPE_LABELS
    raise MetadataError(
        f"metadata {name!r}: values of type {type(value).__name__} cannot be stored; use a "
        f"number, string, boolean, datetime or list of strings (labels)"
    )


def coerce(column: Column, value: object) -> object:
    """`value` as the Python value DuckDB should bind for `column`; None stays NULL.

    Strings are parsed for number, boolean and timestamp columns so that filters typed on a
    command line (``age>=60``) work; anything that does not fit raises MetadataError.
    """
    if value is None:
        return None
    typ = column.type

    def refuse() -> MetadataError:
        return MetadataError(
            f"column {column.name!r} holds {typ} values; {value!r} ({type(value).__name__}) "
            f"does not fit"
        )

    if typ == TYPE_BOOL:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in BOOL_TEXT:
            return BOOL_TEXT[value.strip().lower()]
        raise refuse()
    if typ in ("BIGINT", "INTEGER"):
        if isinstance(value, bool):
            raise refuse()
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        raise refuse()
    if typ == TYPE_DOUBLE:
        if isinstance(value, bool):
            raise refuse()
        if isinstance(value, (int, float)):
            out = float(value)
        elif isinstance(value, str):
            try:
                out = float(value)
            except ValueError:
                raise refuse() from None
        else:
            raise refuse()
        if math.isnan(out):
            raise refuse()
        return out
    if typ == TYPE_TEXT:
        if isinstance(value, str):
            return value
        raise refuse()
    if typ == TYPE_TIME:
        if isinstance(value, str):
            try:
                value = dt.datetime.fromisoformat(value)
            except ValueError:
                raise refuse() from None
        if isinstance(value, dt.datetime):
            # Naive times are taken as UTC so the stored instant never depends on the server's zone.
            return value.astimezone(dt.timezone.utc).replace(tzinfo=None) if value.tzinfo else value
        raise refuse()
    if typ == TYPE_LABELS:
        if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
            if all(isinstance(v, str) for v in value):
                return list(value)
        raise refuse()
    raise refuse()


def widened(current: str, value: object) -> str | None:
    """The type a BIGINT column must widen to for `value` (a fractional float), else None."""
    if current == TYPE_BIGINT and isinstance(value, float) and not value.is_integer():
        return TYPE_DOUBLE
    return None


def columns_from_duckdb(described: Sequence[tuple[str, str]]) -> dict[str, Column]:
    """Readable columns (name -> Column) from DuckDB's (name, type) description of `ecg`."""
    out: dict[str, Column] = {}
    for name, typ in described:
        if name in INTERNAL_COLUMNS or name in VECTOR_COLUMNS:
            continue
        out[name] = Column(name, _canonical_type(typ), user=name not in BASE_COLUMNS)
    return out


def _canonical_type(typ: str) -> str:
    return typ.upper()


#: How booleans are written in text (metadata CSVs, command lines): the one rule for both (the
#: CSV side: ecg_atlas/ingest/manifest.py).
BOOL_TEXT = {"true": True, "false": False, "yes": True, "no": False, "1": True, "0": False}


def metadata_types(rows: Sequence[Mapping[str, object]]) -> dict[str, object]:
    """First non-null value per key across `rows`, in first-seen key order."""
    first: dict[str, object] = {}
    for row in rows:
        for key, value in row.items():
            if key not in first or first[key] is None:
                first[key] = value
    return first


def arrow_type(column_type: str) -> pa.DataType:
    """The Arrow type a column of `column_type` is handed to DuckDB as."""
    return {
        "BIGINT": pa.int64(),
        "INTEGER": pa.int32(),
        "DOUBLE": pa.float64(),
        "VARCHAR": pa.string(),
        "BOOLEAN": pa.bool_(),
        TYPE_TIME: pa.timestamp("us"),
        TYPE_LABELS: pa.list_(pa.string()),
    }[column_type]
