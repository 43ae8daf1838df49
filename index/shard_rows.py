"""The rows one `Store.import_shards` stores, read from embedding shards (the Parquet layout of
`shard_layout`) as Arrow batches in the ``ecg`` table's layout, and the rows it
refuses with their reasons.

Every page is read with its Parquet page checksum verified (shards are written with them; a
shard written before they were has none, and reads as before). A page that fails its checksum,
or does not decode, refuses the whole import (`ShardError`): it is one transaction, so the store
keeps nothing of it. Rows are refused one by one, counted per reason code:

* ``missing_ecg_id``: an embedded row whose ecg_id is null or empty;
* ``unknown_status``: a row whose status is neither ``embedded`` nor ``refused`` (or null);
* ``vector_not_finite``: its record vector or a segment vector holds NaN or infinity;
* ``vector_all_zeros``: its record vector or a segment vector is all zeros (cosine is undefined);
* ``vector_norm_out_of_range``: its record vector or a segment vector has a Euclidean norm outside
  [`vectors.VECTOR_NORM_MIN`, `vectors.VECTOR_NORM_MAX`], which no encoder produces (a damaged or
  foreign file).

The vector rules are `vectors`' (the store's own), the columns `shard_layout`'s.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ecg_atlas.errors import ShardError, StoreError, without_paths

from . import vectors as vector_rules
from .schema import arrow_type
from .shard_layout import EMBEDDED, OUTCOME_COLUMNS, REFUSED, STORED_FIELDS, segments_type, vector_type
from .vectors import VECTOR_ALL_ZEROS, VECTOR_NORM_OUT_OF_RANGE, VECTOR_NOT_FINITE

#: Why import refuses a row (module docstring).
MISSING_ECG_ID, UNKNOWN_STATUS = "missing_ecg_id", "unknown_status"
#: The reasons import itself gives (the others are the shards' own: ``too_short`` ...).
IMPORT_REFUSALS = frozenset({VECTOR_NOT_FINITE, VECTOR_ALL_ZEROS, VECTOR_NORM_OUT_OF_RANGE, MISSING_ECG_ID,
                             UNKNOWN_STATUS})
#: Why import refuses a whole shard (`ShardError.reason`).
SHARD_CHECKSUM_MISMATCH, SHARD_UNREADABLE, NOT_A_SHARD = "shard_checksum_mismatch", "shard_unreadable", "not_a_shard"
#: The columns `census` reads: what it counts, and the refusals' messages (so their pages are verified too).
_CENSUS_COLUMNS = OUTCOME_COLUMNS


def shard_label(file: str | Path) -> str:
    """How messages and logs name a shard file: its folder and name, never where the folder lies."""
    path = Path(file)
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name


def open_shard(file: str | Path) -> pq.ParquetFile:
    """`file` opened for reading with every page's checksum verified (a page without one passes)."""
    try:
        return pq.ParquetFile(file, page_checksum_verification=True)
    except (OSError, pa.ArrowException) as exc:
        raise ShardError(f"cannot read {shard_label(file)} as a shard ({without_paths(str(exc))}); "
                         f"import only files written by ecg-atlas embed", reason=SHARD_UNREADABLE) from exc


def read_row_group(shard: pq.ParquetFile, file: str | Path, group: int, columns: Sequence[str]) -> pa.Table:
    """Row group `group` of an `open_shard` file, its pages' checksums verified."""
    try:
        return shard.read_row_group(group, columns=list(columns), use_threads=False)
    except (OSError, pa.ArrowException) as exc:
        text = without_paths(str(exc))
        if "checksum" in text.lower():
            raise ShardError(f"{shard_label(file)} is damaged: a page of row group {group} fails its checksum "
                             f"(the file changed after it was written: disk, copy or transfer). Nothing was "
                             f"imported; write the shard again (delete it and re-run the embedding job into the "
                             f"same folder) or import the other shards without it",
                             reason=SHARD_CHECKSUM_MISMATCH) from exc
        raise ShardError(f"cannot read row group {group} of {shard_label(file)} ({text}); nothing was imported",
                         reason=SHARD_UNREADABLE) from exc


@dataclass
class ShardCensus:
    """What the shards hold, before anything is inserted."""

    ids: pa.Array  # the ecg_ids of the embedded rows that have one, in file and row order
    refusals: Counter = field(default_factory=Counter)  # rows refused per reason: the shards' own and ours


def _check_layout(shard: pq.ParquetFile, file: str | Path) -> list[str]:
    """The shard's column names, once it has the columns every shard has, ids and statuses as text."""
    schema = shard.schema_arrow
    for needed in ("ecg_id", "status", "record_vector"):
        if needed not in schema.names:
            raise ShardError(f"{shard_label(file)} has no {needed} column: not an embedding shard", reason=NOT_A_SHARD)
    for name in ("ecg_id", "status", "reason"):
        kind = schema.field(name).type if name in schema.names else pa.string()
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise ShardError(f"{shard_label(file)}: column {name} holds {kind}, not text: not an embedding shard",
                             reason=NOT_A_SHARD)
    return schema.names


def census(files: Sequence[str | Path]) -> ShardCensus:
    """Count the shards' rows by status (their checksums verified): the embedded rows' ids, and
    per reason the rows the job refused (its reason code), embedded rows without an ecg_id
    (``missing_ecg_id``) and rows of another status (``unknown_status``)."""
    ids: list[pa.Array] = [pa.array([], pa.string())]
    refusals: Counter = Counter()
    for file in files:
        shard = open_shard(file)
        names = _check_layout(shard, file)
        columns = [name for name in _CENSUS_COLUMNS if name in names]
        for group in range(shard.num_row_groups):
            table = read_row_group(shard, file, group, columns)
            status = table.column("status")
            embedded = pc.fill_null(pc.equal(status, EMBEDDED), False)
            named = pc.fill_null(pc.greater(pc.utf8_length(table.column("ecg_id")), 0), False)
            refused = pc.fill_null(pc.equal(status, REFUSED), False)
            if "reason" in table.column_names:
                reasons = pc.fill_null(table.column("reason").filter(refused), REFUSED)
                for item in pc.value_counts(reasons).to_pylist():
                    refusals[item["values"]] += item["counts"]
            else:
                refusals[REFUSED] += pc.sum(refused).as_py() or 0
            missing = pc.sum(pc.and_(embedded, pc.invert(named))).as_py() or 0
            unknown = table.num_rows - (pc.sum(embedded).as_py() or 0) - (pc.sum(refused).as_py() or 0)
            if missing:
                refusals[MISSING_ECG_ID] += missing
            if unknown:
                refusals[UNKNOWN_STATUS] += unknown
            ids.append(table.column("ecg_id").filter(pc.and_(embedded, named)).combine_chunks().cast(pa.string()))
    return ShardCensus(pa.concat_arrays(ids), refusals)


class ShardRows:
    """The rows one import stores, as Arrow batches in the `ecg` table's layout, for a single
    INSERT that DuckDB streams (one statement: DuckDB writes the rows straight to the database
    file as it goes instead of holding them until COMMIT).

    The Parquet files are decoded once, by pyarrow, a row group ahead on a second thread (the
    decoding releases the GIL, so it runs while DuckDB inserts the previous one). Rows the job
    refused and rows the store holds already are left out; embedded rows whose vectors cannot be
    searched are refused here and counted by reason; sequence numbers follow file and row order.
    With ``keep_vectors`` the normalised record vectors are kept (`vectors`) so the index is
    built from them instead of reading the rows back from DuckDB.
    """

    def __init__(self, files: Sequence[str], dim: int, metadata: Mapping[str, tuple[str, str]], stored: pa.Array,
                 first_seq: int, keep_vectors: bool) -> None:
        """metadata: store column -> (shard column, store type), from `metadata.shard_columns`.
        stored: the shards' ecg_ids the store holds already."""
        self.files = files
        self.dim = dim
        self.metadata = metadata
        self.stored = stored if len(stored) else None
        self.next_seq = first_seq
        self.vector_type = vector_type(dim)
        self.segments_type = segments_type(dim)
        self.schema = pa.schema([pa.field("seq", pa.int64()), *STORED_FIELDS,
                                 pa.field("record_vector", self.vector_type),
                                 pa.field("segment_vectors", self.segments_type)]
                                + [pa.field(key, arrow_type(store_type)) for key, (_, store_type) in metadata.items()])
        self.inserted = 0
        self.refusals: dict[str, int] = {}
        self.refused_ids: list[str] = []  # a few, for the log
        self.vectors: deque[tuple[np.ndarray, np.ndarray]] | None = deque() if keep_vectors else None
        #: What went wrong while DuckDB was reading the batches (it reports only its own error).
        self.failure: Exception | None = None

    def reader(self) -> pa.RecordBatchReader:
        return pa.RecordBatchReader.from_batches(self.schema, self._batches())

    def _batches(self) -> Iterator[pa.RecordBatch]:
        try:
            for table in self._row_groups():
                yield from self._stored_rows(table).to_batches()
        except Exception as exc:
            self.failure = exc
            raise

    def _row_groups(self) -> Iterator[pa.Table]:
        wanted = {"status", *self.schema.names, *(name for name, _ in self.metadata.values())}

        def parts() -> Iterator[tuple[pq.ParquetFile, str, int, list[str]]]:
            for file in self.files:
                shard = open_shard(file)
                columns = [name for name in _check_layout(shard, file) if name in wanted]
                for group in range(shard.num_row_groups):
                    yield shard, file, group, columns

        with ThreadPoolExecutor(1, thread_name_prefix="shard-read") as pool:
            ahead: deque = deque()
            for part in parts():
                ahead.append(pool.submit(read_row_group, *part))
                if len(ahead) > 1:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()

    def _stored_rows(self, table: pa.Table) -> pa.Table:
        """The rows of one row group to store, in `schema`."""
        keep = pc.and_(pc.fill_null(pc.equal(table.column("status"), EMBEDDED), False),
                       pc.fill_null(pc.greater(pc.utf8_length(table.column("ecg_id")), 0), False))
        if self.stored is not None:
            keep = pc.and_(keep, pc.invert(pc.is_in(table.column("ecg_id"), value_set=self.stored)))
        if not pc.all(keep).as_py():
            table = table.filter(keep)
        record_column = self._vectors(table, "record_vector", self.vector_type)
        if record_column.null_count:
            raise ShardError("the shards hold embedded rows without a record_vector: not written by ecg-atlas embed",
                             reason=NOT_A_SHARD)
        record = record_column.combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, self.dim)
        if "segment_vectors" in table.column_names:
            segments = self._vectors(table, "segment_vectors", self.segments_type)
        else:
            segments = pa.chunked_array([pa.nulls(table.num_rows, self.segments_type)])
        norms = vector_rules.norms(record, exact=True)
        problems = vector_rules.problems(record, norms)
        problems = np.where(problems == 0, _segment_problems(segments, self.dim), problems)  # the record's first
        usable = problems == 0
        if not usable.all():
            self._refuse(table.column("ecg_id"), problems[~usable], ~usable)
            chosen = pa.array(usable)
            table, record_column, segments = table.filter(chosen), record_column.filter(chosen), segments.filter(chosen)
            record, norms = record[usable], norms[usable]
        seqs = np.arange(self.next_seq, self.next_seq + table.num_rows, dtype=np.int64)
        self.next_seq += table.num_rows
        self.inserted += table.num_rows
        if self.vectors is not None and table.num_rows:
            # what `vectors.normalised` makes of the same float32 rows, read back from DuckDB
            self.vectors.append((seqs, vector_rules.unit_rows(record, norms)))
        made = {"seq": pa.array(seqs), "record_vector": record_column, "segment_vectors": segments}
        columns = [made[field_.name] if field_.name in made else
                   self._column(table, self.metadata[field_.name][0] if field_.name in self.metadata else field_.name,
                                field_.type)
                   for field_ in self.schema]
        return pa.Table.from_arrays(columns, schema=self.schema)

    def _vectors(self, table: pa.Table, name: str, wanted: pa.DataType) -> pa.ChunkedArray:
        column = table.column(name)
        if column.type == wanted:
            return column
        try:  # list<float> or float64 values written by another Parquet writer
            return column.cast(wanted)
        except pa.ArrowException as exc:
            raise StoreError(f"shard column {name} is {column.type}; this store needs {wanted} "
                             f"(vectors of {self.dim} floats): {exc}") from exc

    def _column(self, table: pa.Table, name: str, wanted: pa.DataType) -> pa.ChunkedArray | pa.Array:
        if name not in table.column_names:
            return pa.nulls(table.num_rows, wanted)
        column = table.column(name)
        if column.type == wanted:
            return column
        try:  # timestamps are truncated to microseconds, as the store keeps them
            return column.cast(wanted, safe=not pa.types.is_timestamp(wanted))
        except pa.ArrowException as exc:
            raise StoreError(f"shard column {name!r} is {column.type}; the store keeps {wanted}: {exc}") from exc

    def _refuse(self, ecg_ids: pa.ChunkedArray, problems: np.ndarray, refused: np.ndarray) -> None:
        for code, count in zip(*np.unique(problems, return_counts=True)):
            reason = vector_rules.PROBLEMS[code]
            self.refusals[reason] = self.refusals.get(reason, 0) + int(count)
        if len(self.refused_ids) < 5:
            self.refused_ids += ecg_ids.filter(pa.array(refused)).to_pylist()[:5 - len(self.refused_ids)]


def _segment_problems(segments: pa.ChunkedArray, dim: int) -> np.ndarray:
    """Per row: the `vectors.PROBLEMS` code of its first refused segment vector (0: none; rows without any pass)."""
    segments = segments.combine_chunks()
    codes = np.zeros(len(segments), np.int8)
    values = segments.flatten().flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
    problems = vector_rules.problems(values, vector_rules.norms(values))
    bad = np.flatnonzero(problems)
    if len(bad):
        rows, first = np.unique(pc.list_parent_indices(segments).to_numpy()[bad], return_index=True)
        codes[rows] = problems[bad][first]
    return codes
