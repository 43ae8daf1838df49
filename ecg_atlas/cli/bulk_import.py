"""`ecg-atlas import SHARDS... --store DIR`: bulk-load embedding shards (``embed --engine ray``).

The shards are read (pyarrow, every page's checksum verified) and streamed into DuckDB in one
transaction; ECGs the store holds already are skipped (importing twice is harmless). A damaged
shard (a page failing its checksum) refuses the whole import: the store keeps nothing of it;
name the other shards to import them. Rows are refused one by one and counted per reason beside
the shards' own refusals: no ecg_id (missing_ecg_id), a status other than embedded / refused
(unknown_status), vectors holding NaN or infinity (vector_not_finite), all zeros
(vector_all_zeros) or of a norm outside [0.01, 10000] (vector_norm_out_of_range). The shards'
encoder must be the store's. The search index is built once, at the end. When a running server
holds the store, the import goes through it (the ``Import`` RPC): the server then reads the
shards itself, so they must lie under one of its ``--data-root`` folders (name them as the
server sees them: absolute inside a root, or relative to one).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ecg_atlas.cli._client import add_client_args, connect, print_json, rpc_errors
from ecg_atlas.cli._store import access


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("import", help="bulk-load embedding shards (embed --engine ray) into a store",
                       description=__doc__)
    p.add_argument("shards", nargs="+", help="shard files, or folders of shard-*.parquet files")
    p.add_argument("--store", default=None, help="store directory (created when missing)")
    p.add_argument("--index-kind", default=None, choices=["flat", "ivf", "hnsw", "ivfpq"],
                   help="index to build for a store opened directly (default: the store's own, else flat)")
    p.add_argument("--index-memory", default=None,
                   help="memory an ivfpq index may take, e.g. 2GB (its code size is chosen from it)")
    add_client_args(p, store_verb=True)
    p.set_defaults(func=run)


@rpc_errors
def run(args: argparse.Namespace) -> int:
    from ecg_atlas.bulk.shards import identity_of, shard_files
    from ecg_atlas.index import Store
    from ecg_atlas.index.backends.ivfpq import parse_memory

    path = access(args)
    started = time.perf_counter()
    if path.via == "server":
        if args.index_kind or args.index_memory:
            print("ecg-atlas import: --index-kind / --index-memory are the server's (serve options); ignored",
                  file=sys.stderr)
        with connect(args) as client:
            result = client.import_shards([str(Path(s).absolute()) for s in args.shards])
    else:
        files = shard_files(args.shards)
        with Store.open(args.store, index_kind=args.index_kind, index_memory=parse_memory(args.index_memory)) as store:
            done = store.import_shards(files, identity=identity_of(files))
            result = {"inserted": done.inserted, "skipped_existing": done.skipped_existing,
                      "refused": done.refused, "files": len(files), "refusals": done.refusals}
    seconds = time.perf_counter() - started
    summary = {**result, "seconds": round(seconds, 2), "via": path.via}
    if args.json:
        print_json(summary)
    else:
        reasons = ", ".join(f"{reason}: {n}" for reason, n in sorted(result["refusals"].items()))
        print(f"imported {result['inserted']} ECGs from {result['files']} shard files in {seconds:.1f} s "
              f"({result['skipped_existing']} already stored, {result['refused']} refused"
              + (f": {reasons})" if reasons else ")"))
    return 0
