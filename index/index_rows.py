"""The store's rows as its derived index reads them (`derived_index.Rows`): every row's sequence
number, the rows' record vectors normalised (all of them or some, in chunks), a sample, a count.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pyarrow as pa

from . import vectors
from .database import Database
from .derived_index import Rows

#: Rows read from DuckDB per chunk when (re)building the index.
SCAN_BATCH = 16_384


def from_database(db: Database, dim: int, count: Callable[[], int]) -> Rows:
    """`Rows` reading the `ecg` table of `db` (its vectors `dim` floats long); `count`: the row count."""

    def ids() -> np.ndarray:
        seqs = db.cursor().execute("SELECT seq FROM ecg").fetchnumpy()["seq"].astype(np.int64)
        seqs.sort()
        return seqs

    def scan(seqs: np.ndarray | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(seqs, normalised vectors) chunks for all rows, or for those with `seqs`."""
        if seqs is not None and len(seqs) == 0:
            return
        cur = db.con.cursor()  # its own: the scan may run beside reads on this thread
        try:
            if seqs is None:
                result = cur.sql("SELECT seq, record_vector FROM ecg")
            else:
                cur.register("wanted_seqs", pa.table({"seq": pa.array(seqs, pa.int64())}))
                result = cur.sql("SELECT seq, record_vector FROM ecg SEMI JOIN wanted_seqs USING (seq)")
            for batch in result.to_arrow_reader(SCAN_BATCH):
                if batch.num_rows:
                    yield batch.column(0).to_numpy().astype(np.int64), _normalised(batch.column(1), dim)
        finally:
            cur.close()

    def sample(n: int) -> tuple[np.ndarray, np.ndarray]:
        rows = db.cursor().sql(
            f"SELECT seq, record_vector FROM ecg USING SAMPLE reservoir({int(n)} ROWS) REPEATABLE (7)"
        ).to_arrow_table()
        return rows.column(0).to_numpy().astype(np.int64), _normalised(rows.column(1), dim)

    return Rows(scan=scan, ids=ids, count=count, sample=sample)


def _normalised(column: pa.Array | pa.ChunkedArray, dim: int) -> np.ndarray:
    """A FLOAT[dim] column as DuckDB hands it to Arrow, as normalised (n, dim) float32 rows."""
    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    return vectors.normalised(column.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim),
                              "stored record_vector", dim)
