"""`ecg-atlas export`: stored ids, metadata and record vectors to Parquet (and TensorBoard TSVs), or a
cluster run's map as the Parquet table Apple's embedding-atlas reads (analysis/atlas_layout.py)."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ecg_atlas.analysis.atlas_layout import DEFAULT_NEIGHBOURS
from ecg_atlas.atomic import write_atomic
from ecg_atlas.cli._client import add_client_args, connect, rpc_errors
from ecg_atlas.cli._store import access
from ecg_atlas.errors import AtlasError
from ecg_atlas.index import Store, parse_filter

FORMATS = ("parquet", "embedding-atlas")


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="write stored ids, metadata and vectors to Parquet",
        description="Write the store's ECGs (ecg_id, metadata columns, record_vector) to a Parquet "
                    "file; optionally also a TensorBoard-projector pair PREFIX.vectors.tsv + "
                    "PREFIX.metadata.tsv. With --format embedding-atlas: a cluster run's ECGs with "
                    "its 2-D map (x, y), a text column and each ECG's nearest neighbours by the "
                    "store's metric (neighbors), as Apple's embedding-atlas reads them: "
                    "embedding-atlas OUT --x x --y y --neighbors neighbors --text text",
    )
    parser.add_argument("--store", default=None, help="store directory (through its server when one holds it)")
    parser.add_argument("--out", required=True, help="Parquet file to write")
    parser.add_argument("--tsv", metavar="PREFIX", help="also write PREFIX.vectors.tsv and PREFIX.metadata.tsv")
    parser.add_argument("--where", action="append", default=[], metavar="FILTER",
                        help="only ECGs matching, e.g. 'age>=60', 'label_groups contains AF_AFL' (repeat: AND)")
    parser.add_argument("--columns", help="comma-separated metadata columns (default: all)")
    parser.add_argument("--format", choices=FORMATS, default="parquet",
                        help="parquet: ids, metadata and record vectors (default); embedding-atlas: a "
                             "cluster run's map for Apple's embedding-atlas (no vectors)")
    parser.add_argument("--run", help="embedding-atlas: the cluster run whose 2-D map gives x and y "
                                      "(default: the store's only run)")
    parser.add_argument("--neighbors", type=int, default=DEFAULT_NEIGHBOURS, metavar="K",
                        help=f"embedding-atlas: nearest neighbours kept per ECG (default {DEFAULT_NEIGHBOURS})")
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
    if args.format == "embedding-atlas":
        return _embedding_atlas(args, columns, out)
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


def _embedding_atlas(args: argparse.Namespace, columns: list[str] | None, out: Path) -> int:
    """A cluster run's ECGs with its map and their neighbours, as embedding-atlas reads them."""
    import sys

    from ecg_atlas.analysis.atlas_layout import atlas_table, view_command

    if args.tsv:
        raise AtlasError("--tsv writes the projector's vectors; with --format embedding-atlas leave it out")
    if args.neighbors < 1:
        raise AtlasError(f"--neighbors is {args.neighbors}; give 1 or more nearest neighbours per ECG")
    path = access(args)
    wanted = list(dict.fromkeys(columns)) if columns else None

    def reading(runs: list[dict], kept: Callable[[str], pa.Table], batches) -> tuple[str, pa.Table, pa.Table]:
        run = _chosen_run(args.run, [r["run"] for r in runs])
        return run, kept(run), pa.Table.from_batches(list(batches))

    if path.via == "server":
        with connect(args) as client:
            run, assignments, stored = reading(
                client.list_cluster_runs(), lambda r: client.cluster_run(r)["assignments"],
                client.export(where=args.where or None, columns=wanted or (), vectors=True))
    else:
        from ecg_atlas.analysis.store_io import list_cluster_runs, run_dir

        where = parse_filter(args.where) if args.where else None
        with Store.open(args.store, create=False, read_only=True, with_index=False) as store:
            run, assignments, stored = reading(
                list_cluster_runs(store), lambda r: pq.read_table(run_dir(store, r) / "assignments.parquet"),
                store.iter_batches(filter=where, columns=wanted or None, with_vectors=True))
    print(f"ecg-atlas export: {stored.num_rows} stored ECGs read; finding {args.neighbors} nearest neighbours "
          f"of each (exact: minutes at 100k ECGs)", file=sys.stderr, flush=True)
    from ecg_atlas.progress import Progress

    kept = len(set(assignments.column("ecg_id").to_pylist()) & set(stored.column("ecg_id").to_pylist()))
    with Progress("ecg-atlas export: neighbours", total=kept, unit="ECGs") as bar:
        table = atlas_table(assignments, stored, args.neighbors, progress=lambda done, total: bar.set(done))
    write_atomic(out, lambda tmp: pq.write_table(table, tmp))
    summary = {"rows": table.num_rows, "out": str(out), "format": "embedding-atlas", "run": run,
               "neighbors": args.neighbors, "columns": table.column_names, "via": path.via,
               "left_out": assignments.num_rows - table.num_rows, "view": view_command(str(out))}
    if args.json:
        print(json.dumps(summary))
    else:
        print(f"exported {table.num_rows} ECGs of cluster run {run} to {out} (embedding-atlas layout)")
        print(f"  view it: {summary['view']}")
    return 0


def _chosen_run(asked: str | None, runs: list[str]) -> str:
    if asked:
        if asked not in runs:
            raise AtlasError(f"no cluster run named {asked!r} in this store (runs: {', '.join(runs) or 'none'})")
        return asked
    if len(runs) == 1:
        return runs[0]
    if not runs:
        raise AtlasError("the store has no cluster run to export: make one with "
                         "`ecg-atlas cluster --store STORE --run NAME`, then export with --run NAME")
    raise AtlasError(f"the store has {len(runs)} cluster runs ({', '.join(runs)}): say which with --run")
