"""`ecg-atlas get ID...`: stored ECGs' metadata (and vectors with --vectors)."""

from __future__ import annotations

import argparse

from ecg_atlas.cli._client import add_client_args, connect, print_json, rpc_errors


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("get", help="show stored ECGs by id", description=__doc__)
    p.add_argument("ecg_ids", nargs="+", help="ids of stored ECGs")
    p.add_argument("--vectors", action="store_true", help="include the record vectors")
    add_client_args(p)
    p.set_defaults(func=run)


@rpc_errors
def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        found, missing = client.get(args.ecg_ids, vectors=args.vectors)
    if args.json:
        print_json({"ecgs": [{"ecg_id": e.ecg_id, "patient_id": e.patient_id, "metadata": e.metadata,
                              **({"record_vector": e.record_vector} if args.vectors else {})} for e in found],
                    "missing_ids": missing})
    else:
        for e in found:
            print(e.ecg_id)
            for key, value in sorted(e.metadata.items()):
                print(f"  {key}: {value}")
            if args.vectors:
                first = e.record_vector[:4].round(4).tolist()
                print(f"  record_vector: {len(e.record_vector)}-d, first values {first}")
        for ecg_id in missing:
            print(f"{ecg_id}: not stored")
    return 0 if not missing else 1
