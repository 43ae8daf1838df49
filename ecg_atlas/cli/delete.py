"""`ecg-atlas delete ID... | --patient P`: remove ECGs (e.g. when a patient withdraws consent)."""

from __future__ import annotations

import argparse

from ecg_atlas.cli._client import add_client_args, connect, print_json, rpc_errors
from ecg_atlas.errors import AtlasError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("delete", help="delete stored ECGs by id or patient", description=__doc__)
    p.add_argument("ecg_ids", nargs="*", help="ids of stored ECGs")
    p.add_argument("--patient", default=None, help="delete every ECG of this patient id")
    add_client_args(p)
    p.set_defaults(func=run)


@rpc_errors
def run(args: argparse.Namespace) -> int:
    if not args.ecg_ids and not args.patient:
        raise AtlasError("name the ECG ids to delete, or --patient ID")
    with connect(args) as client:
        deleted = client.delete(args.ecg_ids, patient_id=args.patient)
    if args.json:
        print_json({"deleted": deleted})
    else:
        print(f"deleted {deleted} ECG{'s' if deleted != 1 else ''}")
    return 0
