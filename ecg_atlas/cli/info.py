"""`ecg-atlas info`: what the server runs (model, device, index, counts, limits, versions)."""

from __future__ import annotations

import argparse

from ecg_atlas.cli._client import add_client_args, connect, print_json, rpc_errors


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="show the server's model, store and limits", description=__doc__)
    add_client_args(p)
    p.set_defaults(func=run)


@rpc_errors
def run(args: argparse.Namespace) -> int:
    with connect(args) as client:
        info = client.info()
    if args.json:
        print_json(info)
        return 0
    if info.get("encoder_notice"):
        print(f"NOTE: {info['encoder_notice']}")
    print(f"model      {info['model_id']} ({info['dim']}-d, {info['dtype']} on {info['device']}), "
          f"checkpoint sha256 {info['checkpoint_sha256'][:16]}…, preprocessing {info['preprocessing_version']}")
    print(f"store      {info['ecg_count']} ECGs; index {info['index_kind']} on {info['index_backend']}")
    print(f"security   auth {'on' if info['auth_enabled'] else 'off'}, TLS {'on' if info['tls'] else 'off'}")
    print("limits     " + ", ".join(f"{k}={v}" for k, v in info["limits"].items()))
    print("versions   " + ", ".join(f"{k} {v}" for k, v in sorted(info["versions"].items())))
    return 0
