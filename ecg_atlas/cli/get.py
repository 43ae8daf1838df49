"""`ecg-atlas get ID...`: stored ECGs' metadata (and vectors with --vectors).

Shows the fields each ECG has a value for, SNOMED CT codes (dx, labels_snomed) with their names;
the encoder's identity, the same for every ECG of a store, is left to `ecg-atlas info`. --all:
every column, unset ones as None; --json: every field as stored, codes bare.
"""

from __future__ import annotations

import argparse

from ecg_atlas.cli._client import add_client_args, connect, print_json, rpc_errors


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("get", help="show stored ECGs by id", description=__doc__)
    p.add_argument("ecg_ids", nargs="+", help="ids of stored ECGs")
    p.add_argument("--vectors", action="store_true", help="include the record vectors")
    p.add_argument("--all", dest="all_fields", action="store_true",
                   help="also list the store's columns this ECG has no value for")
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
            for key, value in present_fields(e.metadata, args.all_fields):
                print(f"  {key}: {value}")
            if args.vectors:
                first = e.record_vector[:4].round(4).tolist()
                print(f"  record_vector: {len(e.record_vector)}-d, first values {first}")
        for ecg_id in missing:
            print(f"{ecg_id}: not stored")
    return 0 if not missing else 1


#: The same for every ECG of a store (`ecg-atlas info` shows them): printed with --all only.
STORE_WIDE = frozenset({"checkpoint_sha256", "model_id", "preprocessing_version"})


def present_fields(metadata: dict, everything: bool = False) -> list[tuple[str, object]]:
    """(field, value as a person reads it) sorted by field: unset fields (None, empty text) and
    the store-wide encoder identity left out unless `everything`; lists joined (an empty list,
    "none of these labels", as "(none)"); SNOMED CT codes named."""
    from ecg_atlas.labels import display_value

    out = []
    for key, value in sorted(metadata.items()):
        if not everything and (value is None or value == "" or key in STORE_WIDE):
            continue
        value = display_value(key, value)
        if isinstance(value, list):
            value = ", ".join(map(str, value)) or "(none)"
        out.append((key, value))
    return out
