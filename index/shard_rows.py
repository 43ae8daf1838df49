"""The rows one `Store.import_shards` stores, read from embedding shards (the Parquet layout of
``ecg_atlas/bulk/shards.py``) as Arrow batches in the ``ecg`` table's layout, and the rows it
refuses with their reasons.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from ecg_atlas.errors import StoreError

from .schema import arrow_type

#: Why import refuses a row the job embedded: its record vector (or a segment vector) holds NaN or
#: infinity, or the record vector is all zeros; such a row can be neither searched nor ingested.
VECTOR_NOT_FINITE, VECTOR_ALL_ZEROS = "vector_not_finite", "vector_all_zeros"


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
        """metadata: store column -> (shard column, store type), from `Store._import_columns`.
        stored: the shards' ecg_ids the store holds already."""
        self.files = files
        self.dim = dim
        self.metadata = metadata
        self.stored = stored if len(stored) else None
        self.next_seq = first_seq
        self.vector_type = pa.list_(pa.float32(), dim)
        self.segments_type = pa.list_(self.vector_type)
        fixed = [pa.field("ecg_id", pa.string()), pa.field("patient_id", pa.string()), pa.field("source", pa.string()),
                 pa.field("fs", pa.float64()), pa.field("lead_names", pa.list_(pa.string())),
                 pa.field("duration_s", pa.float64()), pa.field("n_segments", pa.int32())]
        self.schema = pa.schema([pa.field("seq", pa.int64()), *fixed, pa.field("record_vector", self.vector_type),
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

        def parts() -> Iterator[tuple[str, pq.ParquetFile, int, list[str]]]:
            for file in self.files:
                try:
                    shard = pq.ParquetFile(file)
                except (OSError, pa.ArrowException) as exc:
                    raise StoreError(f"cannot read {file} as a shard: {exc}") from exc
                columns = [name for name in shard.schema_arrow.names if name in wanted]
                for missing in ("ecg_id", "status", "record_vector"):
                    if missing not in columns:
                        raise StoreError(f"{file} has no {missing} column: not an embedding shard")
                for group in range(shard.num_row_groups):
                    yield file, shard, group, columns

        def read(file: str, shard: pq.ParquetFile, group: int, columns: list[str]) -> pa.Table:
            try:
                return shard.read_row_group(group, columns=columns, use_threads=False)
            except (OSError, pa.ArrowException) as exc:
                raise StoreError(f"cannot read row group {group} of {file}: {exc}") from exc

        with ThreadPoolExecutor(1, thread_name_prefix="shard-read") as pool:
            ahead: deque = deque()
            for part in parts():
                ahead.append(pool.submit(read, *part))
                if len(ahead) > 1:
                    yield ahead.popleft().result()
            while ahead:
                yield ahead.popleft().result()

    def _stored_rows(self, table: pa.Table) -> pa.Table:
        """The rows of one row group to store, in `schema`."""
        keep = pc.fill_null(pc.equal(table.column("status"), "embedded"), False)
        if self.stored is not None:
            keep = pc.and_(keep, pc.invert(pc.is_in(table.column("ecg_id"), value_set=self.stored)))
        if not pc.all(keep).as_py():
            table = table.filter(keep)
        record_column = self._vectors(table, "record_vector", self.vector_type)
        if record_column.null_count:
            raise StoreError("the shards hold embedded rows without a record_vector: not written by ecg-atlas embed")
        record = record_column.combine_chunks().flatten().to_numpy(zero_copy_only=False).reshape(-1, self.dim)
        norms = np.linalg.norm(record, axis=1)
        finite = np.isfinite(norms)
        if not finite.all():  # an infinite norm may come from squares of huge but finite values
            finite[~finite] = np.isfinite(record[~finite]).all(axis=1)
        if "segment_vectors" in table.column_names:
            segments = self._vectors(table, "segment_vectors", self.segments_type)
        else:
            segments = pa.chunked_array([pa.nulls(table.num_rows, self.segments_type)])
        finite &= self._finite_segments(segments)
        usable = finite & (norms > 0)
        if not usable.all():
            self._refuse(table.column("ecg_id"), np.where(finite, VECTOR_ALL_ZEROS, VECTOR_NOT_FINITE)[~usable], ~usable)
            chosen = pa.array(usable)
            table, record_column, segments = table.filter(chosen), record_column.filter(chosen), segments.filter(chosen)
            record, norms = record[usable], norms[usable]
        seqs = np.arange(self.next_seq, self.next_seq + table.num_rows, dtype=np.int64)
        self.next_seq += table.num_rows
        self.inserted += table.num_rows
        if self.vectors is not None and table.num_rows:
            # what `_normalised` makes of the same float32 rows, read back from DuckDB
            self.vectors.append((seqs, np.ascontiguousarray(record / norms[:, None], dtype=np.float32)))
        columns = [pa.array(seqs)]
        for field_ in self.schema:
            if field_.name in ("seq", "record_vector", "segment_vectors"):
                continue
            name = self.metadata[field_.name][0] if field_.name in self.metadata else field_.name
            columns.append(self._column(table, name, field_.type))
        columns[8:8] = [record_column, segments]
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

    def _finite_segments(self, segments: pa.ChunkedArray) -> np.ndarray:
        """Per row: are all its segment vectors finite (rows without any are)."""
        segments = segments.combine_chunks()
        values = segments.flatten().flatten().to_numpy(zero_copy_only=False)
        finite = np.ones(len(segments), dtype=bool)
        if not np.isfinite(values).all():
            bad_vectors = ~np.isfinite(values.reshape(-1, self.dim)).all(axis=1)
            finite[pc.list_parent_indices(segments).to_numpy()[bad_vectors]] = False
        return finite

    def _refuse(self, ecg_ids: pa.ChunkedArray, reasons: np.ndarray, refused: np.ndarray) -> None:
        for reason, count in zip(*np.unique(reasons, return_counts=True)):
            self.refusals[str(reason)] = self.refusals.get(str(reason), 0) + int(count)
        if len(self.refused_ids) < 5:
            self.refused_ids += ecg_ids.filter(pa.array(refused)).to_pylist()[:5 - len(self.refused_ids)]
