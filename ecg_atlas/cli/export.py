"""`ecg-atlas export`: stored ids, metadata and record vectors to Parquet (and TensorBoard TSVs)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ecg_atlas.cli._client import add_client_args, connect, rpc_errors
from ecg_atlas.cli._store import access
from ecg_atlas.index import Store, parse_filter
from ecg_atlas.index.atomic import write_atomic


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write stored ids, metadata and vectors to Parquet",
        description="Write the store's ECGs (ecg_id, metadata columns, record_vector) to a Parquet "
                    "file; optionally also a TensorBoard-projector pair PREFIX.vectors.tsv + "
                    "PREFIX.metadata.tsv.",
    )
    parser.add_argument("--store", default=None, help="store directory (through its server when one holds it)")
    parser.add_argument("--out", required=True, help="Parquet file to write")
    parser.add_argument("--tsv", metavar="PREFIX", help="also write PREFIX.vectors.tsv and PREFIX.metadata.tsv")
    parser.add_argument("--where", action="append", default=[], metavar="FILTER",
                        help="only ECGs matching, e.g. 'age>=60', 'labels contains AF' (repeat: AND)")
    parser.add_argument("--columns", help="comma-separated metadata columns (default: all)")
    add_client_args(parser, store_verb=True)
    parser.set_defaults(func=run)


def _tsv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return " ".join(str(value).split())  # tabs / newlines would break the projector's columns


@rpc_errors
def run(args: argparse.Namespace) -> int:
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    out = Path(args.out)
    path = access(args)
    if path.via == "server":
        with connect(args) as client:
            rows, names, tsv_files = _write(client.export(where=args.where or None, columns=columns or (),
                                                          vectors=True), out, args.tsv)
    else:
        where = parse_filter(args.where) if args.where else None
        with Store.open(args.store, create=False, read_only=True, with_index=False) as store:
            rows, names, tsv_files = _write(store.iter_batches(filter=where, columns=columns, with_vectors=True),
                                            out, args.tsv)
    summary = {"rows": rows, "out": str(out), "columns": names, "tsv": tsv_files, "via": path.via}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"exported {rows} ECGs to {out}" + (f" and {', '.join(tsv_files)}" if tsv_files else ""))
    return 0


def _write(batches, out: Path, tsv: str | None) -> tuple[int, list[str], list[str]]:
    """Stream record batches (ecg_id, metadata, record_vector) into `out` (and the TSV pair)."""
    rows = 0
    names: list[str] = []
    tsv_files = [f"{tsv}.vectors.tsv", f"{tsv}.metadata.tsv"] if tsv else []

    def write(tmp: str) -> None:
        nonlocal rows, names
        writer = None
        vec_f = meta_f = None
        try:
            if tsv:
                vec_f, meta_f = open(tsv_files[0], "w"), open(tsv_files[1], "w")
            for batch in batches:
                if writer is None:
                    writer = pq.ParquetWriter(tmp, batch.schema)
                    names = [n for n in batch.schema.names if n != "record_vector"]
                    if meta_f is not None:
                        meta_f.write("\t".join(names) + "\n")
                writer.write_batch(batch)
                rows += batch.num_rows
                if vec_f is not None:
                    vectors = batch.column("record_vector").flatten().to_numpy(zero_copy_only=False)
                    np.savetxt(vec_f, vectors.reshape(batch.num_rows, -1), delimiter="\t", fmt="%.7g")
                    table = pa.Table.from_batches([batch]).select(names).to_pylist()
                    meta_f.writelines("\t".join(_tsv_cell(r[n]) for n in names) + "\n" for r in table)
            if writer is None:  # nothing matched: still write a valid, empty file
                pq.write_table(pa.table({"ecg_id": pa.array([], pa.string())}), tmp)
        finally:
            if writer is not None:
                writer.close()
            for f in (vec_f, meta_f):
                if f is not None:
                    f.close()

    write_atomic(out, write)
    return rows, names, tsv_files
