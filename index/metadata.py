"""User metadata on its way into the `ecg` table: the checks, the typing of values, and the schema
changes they need (a new key becomes a column, an integer column meeting real numbers widens to
DOUBLE, and a store at its column cap first drops the columns no stored ECG holds a value in).

The rules themselves (names, inferred types, coercion, the caps) are `schema`'s; this module
applies them to a batch, for `Store.upsert`, `Store.update_metadata` and `Store.import_shards`.
Every function here runs inside the caller's write transaction: a failure rolls back every
schema change with the rows. `columns` is the store's own ``name -> schema.Column`` map, kept in
step with each change.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import duckdb
import pyarrow as pa

from ecg_atlas.errors import StoreError

from . import schema

# The store's logger: an operator follows a store's life, its schema changes included, under one name.
log = logging.getLogger("ecg_atlas.index.store")

Columns = dict[str, schema.Column]

#: Python types that need no coercion for a column type (checked exactly: bool is not an int here).
_EXACT_TYPES = {"BIGINT": int, "DOUBLE": float, "VARCHAR": str, "BOOLEAN": bool}
#: The store type a shard's metadata column (as DuckDB describes it) goes to.
_SHARD_TYPES = {"BIGINT": schema.TYPE_BIGINT, "INTEGER": schema.TYPE_BIGINT, "DOUBLE": schema.TYPE_DOUBLE,
                "FLOAT": schema.TYPE_DOUBLE, "VARCHAR": schema.TYPE_TEXT, "BOOLEAN": schema.TYPE_BOOL,
                "TIMESTAMP": schema.TYPE_TIME, "TIMESTAMP_NS": schema.TYPE_TIME, "VARCHAR[]": schema.TYPE_LABELS}


def check_rows(rows: Sequence[Mapping[str, object]], max_keys: int) -> None:
    """Refuse a batch whose metadata has too many keys for one ECG, or a key that cannot be a column."""
    for row in rows:
        schema.check_key_count(row, max_keys)
    for key in {k for r in rows for k in r}:
        schema.check_metadata_name(key)


def typed_values(con: duckdb.DuckDBPyConnection, columns: Columns, rows: Sequence[Mapping[str, object]],
                 max_columns: int) -> dict[str, tuple[str, list]]:
    """Per metadata key of `rows`: the column type and the values coerced to it (None where a row
    lacks the key). New keys become columns (a key holding only nulls gets none), integer
    columns widen."""
    out: dict[str, tuple[str, list]] = {}
    types = schema.metadata_types(rows)
    new = [key for key, first in types.items() if key not in columns and first is not None]
    if new:
        make_room(con, columns, new, keep=set(types), max_columns=max_columns)
    for key, first in types.items():
        column = columns.get(key)
        if column is None:
            if first is None:
                continue  # only nulls: nothing to store, no type to give the column
            column = _add_column(con, columns, key, schema.infer_type(key, first))
        values = [r.get(key) for r in rows]
        kinds = {type(v) for v in values}  # one pass; most batches hold one Python type per key
        if float in kinds:
            wider = next((w for w in map(lambda v: schema.widened(column.type, v), values) if w), None)
            if wider:
                column = _retype_column(con, columns, key, wider)
        exact = _EXACT_TYPES.get(column.type)
        kinds.discard(type(None))
        if exact is not None and kinds <= {exact}:
            pass  # already what DuckDB binds for this column
        elif column.type == schema.TYPE_LABELS and kinds <= {list} and all(
                type(x) is str for v in values if v is not None for x in v):
            pass  # lists of strings: the label-list column's own type
        else:
            values = [schema.coerce(column, v) for v in values]
        out[key] = (column.type, values)
    return out


def shard_columns(con: duckdb.DuckDBPyConnection, columns: Columns, described: Mapping[str, tuple[str, str]],
                  max_columns: int) -> dict[str, tuple[str, str]]:
    """Per metadata key an import fills (`described`: key -> (the shards' column, the type DuckDB
    describes it with)): (the shards' column, the store type to cast its values to). New keys
    become columns; an integer column meeting real numbers widens to DOUBLE (and a real-number
    column takes integers as they are)."""
    keys = [schema.check_metadata_name(key) for key in described]
    make_room(con, columns, [key for key in keys if key not in columns], keep=set(keys), max_columns=max_columns)
    out = {}
    for key, (name, shard_type) in described.items():
        wanted = _SHARD_TYPES.get(shard_type.upper())
        if wanted is None:
            raise StoreError(f"shard column {name!r} is {shard_type}, which no metadata column can hold")
        column = columns.get(key)
        if column is None:
            column = _add_column(con, columns, key, wanted)
        elif column.type == schema.TYPE_BIGINT and wanted == schema.TYPE_DOUBLE:
            column = _retype_column(con, columns, key, schema.TYPE_DOUBLE)
        elif column.type != wanted and not (column.type == schema.TYPE_DOUBLE and wanted == schema.TYPE_BIGINT):
            raise StoreError(f"metadata {key!r}: the store holds {column.type} values, the shards {wanted}")
        out[key] = (name, column.type)
    return out


def make_room(con: duckdb.DuckDBPyConnection, columns: Columns, new: Sequence[str], keep: set[str],
              max_columns: int) -> None:
    """Before the keys `new` become columns: past `max_columns`, the user columns that no stored
    ECG holds a value in (every ECG that had one was deleted) and this write does not name are
    dropped; still past it, MetadataLimitError (the rollback keeps every column)."""
    user = [name for name, column in columns.items() if column.user]
    if len(user) + len(new) <= max_columns:
        return
    counts = (con.execute("SELECT " + ", ".join(f'count("{n}")' for n in user) + " FROM ecg").fetchone()
              if user else ())
    unused = [name for name, count in zip(user, counts, strict=True) if count == 0 and name not in keep]
    if len(user) - len(unused) + len(new) > max_columns:
        raise schema.refuse_new_columns(new, len(user), max_columns)
    for name in unused:
        con.execute(f'ALTER TABLE ecg DROP COLUMN "{name}"')
        del columns[name]
    log.info("dropped %d metadata columns that no stored ECG holds a value in, to make room for new ones",
             len(unused))


def set_values(con: duckdb.DuckDBPyConnection, ecg_ids: Sequence[str], rows: Sequence[Mapping[str, object]],
               typed: Mapping[str, tuple[str, list]]) -> None:
    """Write `typed` (`typed_values` of `rows`) into the stored ECGs `ecg_ids`, row by row: a key
    a row names is set (None clears it), a key it does not name is left as it is."""
    for key, (column_type, values) in typed.items():
        present = [i for i, r in enumerate(rows) if key in r]
        table = pa.table({
            "ecg_id": pa.array([ecg_ids[i] for i in present], pa.string()),
            "value": pa.array([values[i] for i in present], schema.arrow_type(column_type)),
        })
        con.register("changes", table)
        con.execute(f'UPDATE ecg SET "{key}" = changes.value FROM changes WHERE ecg.ecg_id = changes.ecg_id')
        con.unregister("changes")


def _add_column(con: duckdb.DuckDBPyConnection, columns: Columns, key: str, column_type: str) -> schema.Column:
    con.execute(f'ALTER TABLE ecg ADD COLUMN "{key}" {column_type}')
    column = columns[key] = schema.Column(key, column_type, user=True)
    return column


def _retype_column(con: duckdb.DuckDBPyConnection, columns: Columns, key: str, column_type: str) -> schema.Column:
    con.execute(f'ALTER TABLE ecg ALTER COLUMN "{key}" TYPE {column_type}')
    column = columns[key] = schema.Column(key, column_type, user=True)
    return column
