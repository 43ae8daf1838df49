"""`ecg-atlas export`: stored ids, metadata and record vectors to Parquet (and TensorBoard TSVs)."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ecg_atlas.index import Store, parse_filter


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write stored ids, metadata and vectors to Parquet",
        description="Write the store's ECGs (ecg_id, metadata columns, record_vector) to a Parquet "
                    "file; optionally also a TensorBoard-projector pair PREFIX.vectors.tsv + "
                    "PREFIX.metadata.tsv.",
    )
    parser.add_argument("--store", required=True, help="store directory")
    parser.add_argument("--out", required=True, help="Parquet file to write")
    parser.add_argument("--tsv", metavar="PREFIX", help="also write PREFIX.vectors.tsv and PREFIX.metadata.tsv")
    parser.add_argument("--where", action="append", default=[], metavar="FILTER",
                        help="only ECGs matching, e.g. 'age>=60', 'labels contains AF' (repeat: AND)")
    parser.add_argument("--columns", help="comma-separated metadata columns (default: all)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary")
    parser.set_defaults(func=run)


def _tsv_cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        value = ",".join(str(v) for v in value)
    return " ".join(str(value).split())  # tabs / newlines would break the projector's columns


def run(args: argparse.Namespace) -> int:
    where = parse_filter(args.where) if args.where else None
    columns = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    out = Path(args.out)
    tmp = out.with_name(out.name + ".tmp")
    rows = 0
    names: list[str] = []
    tsv_files = []
    with Store.open(args.store, create=False, read_only=True, with_index=False) as store:
        writer = None
        vec_f = meta_f = None
        try:
            if args.tsv:
                tsv_files = [f"{args.tsv}.vectors.tsv", f"{args.tsv}.metadata.tsv"]
                vec_f, meta_f = open(tsv_files[0], "w"), open(tsv_files[1], "w")
            for batch in store.iter_batches(filter=where, columns=columns, with_vectors=True):
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
    os.replace(tmp, out)
    summary = {"rows": rows, "out": str(out), "columns": names, "tsv": tsv_files}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"exported {rows} ECGs to {out}" + (f" and {', '.join(tsv_files)}" if tsv_files else ""))
    return 0
