"""Changed copies of real embedding shards, for the import tests: vectors, ids or statuses edited
and written again by the project's writer (`write_shard`), written as the writer did before it
added page checksums, or damaged on disk after writing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ecg_atlas.bulk.shards import write_shard
from ecg_atlas.index import schema


def vectors(table: pa.Table) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Copies of a shard table's record vectors (rows, dim), segment vectors (all, dim) and the
    segment offsets per row."""
    dim = table.schema.field("record_vector").type.list_size
    records = table.column("record_vector").combine_chunks()
    segments = table.column("segment_vectors").combine_chunks()
    return (records.values.to_numpy(zero_copy_only=False).reshape(-1, dim).copy(),
            segments.values.values.to_numpy(zero_copy_only=False).reshape(-1, dim).copy(),
            segments.offsets.to_numpy())


def with_vectors(table: pa.Table, records: np.ndarray, segment_values: np.ndarray) -> pa.Table:
    """`table` with these record and segment vectors (the rows' nulls kept)."""
    dim = records.shape[1]
    vector_type = pa.list_(pa.float32(), dim)
    old_records = table.column("record_vector").combine_chunks()
    old_segments = table.column("segment_vectors").combine_chunks()
    table = table.set_column(table.schema.get_field_index("record_vector"), "record_vector",
                             pa.FixedSizeListArray.from_arrays(pa.array(records.ravel(), pa.float32()),
                                                               type=vector_type, mask=old_records.is_null()))
    return table.set_column(table.schema.get_field_index("segment_vectors"), "segment_vectors",
                            pa.ListArray.from_arrays(old_segments.offsets, pa.FixedSizeListArray.from_arrays(
                                pa.array(segment_values.ravel(), pa.float32()), type=vector_type),
                                mask=old_segments.is_null()))


def rewrite_shard(source: Path, target: Path, change: Callable[[np.ndarray, np.ndarray, np.ndarray], None]) -> pa.Table:
    """Copy shard `source` to `target` (by `write_shard`) with its record / segment vectors
    changed in place by ``change(records, segment_values, offsets)``; returns the table written."""
    table = pq.read_table(source)
    records, segment_values, offsets = vectors(table)
    change(records, segment_values, offsets)
    table = with_vectors(table, records, segment_values)
    write_shard(target, table)
    return table


def with_column(table: pa.Table, name: str, values: list) -> pa.Table:
    return table.set_column(table.schema.get_field_index(name), name, pa.array(values, table.schema.field(name).type))


def write_without_checksums(table: pa.Table, target: Path) -> None:
    """`table` written as `write_shard` wrote shards before they carried page checksums."""
    dictionary = [name for name in table.column_names if name not in schema.VECTOR_COLUMNS]
    pq.write_table(table, target, compression="zstd", use_dictionary=dictionary, row_group_size=8192)


def damage(path: Path, column: str, n_bytes: int = 64) -> None:
    """Flip the last `n_bytes` bytes of the first row group's `column` chunk: the end of its last
    data page, past the page's header (the test shards are small: a chunk of vectors is one
    page), as a bad disk or copy would."""
    meta = pq.ParquetFile(path).metadata.row_group(0)
    chunk = next(meta.column(i) for i in range(meta.num_columns)
                 if meta.column(i).path_in_schema.split(".")[0] == column)
    end = (chunk.dictionary_page_offset or chunk.data_page_offset) + chunk.total_compressed_size
    assert end - chunk.data_page_offset > 2 * n_bytes, "the data page is too small to damage its end"
    data = bytearray(path.read_bytes())
    for i in range(end - n_bytes, end):
        data[i] ^= 0xA5
    path.write_bytes(bytes(data))
