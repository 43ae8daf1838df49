"""The store's own facts, in DuckDB's ``store_meta`` key / value table: the format version, the
store's id, the next sequence number, the encoder identity (with the ``ecg`` table it fixes the
vector size of) and the encoder's input contract.

Every function takes the connection to use; those that write run inside the caller's write
transaction.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass

import duckdb

from ecg_atlas.errors import StoreError

from . import schema, signal_copy
from .types import EncoderIdentity

TABLE = "store_meta"
#: Version of the store's layout (``format_version``); a store of another version is refused.
FORMAT_VERSION = 1


@dataclass(frozen=True)
class Facts:
    store_uuid: str
    next_seq: int
    identity: EncoderIdentity | None


def create(con: duckdb.DuckDBPyConnection) -> None:
    """The table of a new store: this format, a fresh id, sequence numbers from 1."""
    con.execute(f"CREATE TABLE {TABLE} (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
    con.execute(f"INSERT INTO {TABLE} VALUES ('format_version', ?), ('store_uuid', ?), ('next_seq', '1')",
                [str(FORMAT_VERSION), uuid.uuid4().hex])


def read(con: duckdb.DuckDBPyConnection, where: object) -> Facts:
    """The facts of the store `where` names (in messages); refuses another format version."""
    values = dict(con.execute(f"SELECT key, value FROM {TABLE}").fetchall())
    if int(values.get("format_version", -1)) != FORMAT_VERSION:
        raise StoreError(f"{where} has store format {values.get('format_version')}; "
                         f"this version reads format {FORMAT_VERSION}")
    identity = EncoderIdentity(**json.loads(values["identity"])) if "identity" in values else None
    return Facts(values["store_uuid"], int(values["next_seq"]), identity)


def set_next_seq(con: duckdb.DuckDBPyConnection, next_seq: int) -> None:
    con.execute(f"UPDATE {TABLE} SET value = ? WHERE key = 'next_seq'", [str(next_seq)])


def set_identity(con: duckdb.DuckDBPyConnection, identity: EncoderIdentity) -> None:
    """Fix the store's encoder: record it and create the tables its vectors go to."""
    if not isinstance(identity.dim, int) or identity.dim <= 0:
        raise StoreError(f"encoder dimension must be a positive integer, got {identity.dim!r}")
    con.execute(schema.table_ddl(identity.dim))
    con.execute(signal_copy.DDL)
    con.execute(f"INSERT INTO {TABLE} VALUES ('identity', ?)", [json.dumps(asdict(identity))])


def has_identity(con: duckdb.DuckDBPyConnection) -> bool:
    return bool(con.execute(f"SELECT count(*) FROM {TABLE} WHERE key = 'identity'").fetchall()[0][0])


def contract(con: duckdb.DuckDBPyConnection) -> str | None:
    """The encoder's input contract as recorded (JSON text), if any."""
    rows = con.execute(f"SELECT value FROM {TABLE} WHERE key = 'encoder_contract'").fetchall()
    return rows[0][0] if rows else None


def set_contract(con: duckdb.DuckDBPyConnection, text: str) -> None:
    con.execute(f"DELETE FROM {TABLE} WHERE key = 'encoder_contract'")
    con.execute(f"INSERT INTO {TABLE} VALUES ('encoder_contract', ?)", [text])
