"""What every client verb shares: how to reach the server, and gRPC errors as plain messages."""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys

from ecg_atlas.errors import AtlasError

SERVER_ENV = "ECG_ATLAS_SERVER"
TOKEN_ENVS = ("ECG_ATLAS_TOKEN", "ECG_ATLAS_WRITE_TOKEN", "ECG_ATLAS_READ_TOKEN")


def add_client_args(p: argparse.ArgumentParser, *, store_verb: bool = False) -> None:
    """Connection options. A `store_verb` (one that takes --store) uses a server only when told
    to (--server) or when a running server holds the store (ecg_atlas.cli._store)."""
    g = p.add_argument_group("server connection")
    if store_verb:
        g.add_argument("--server", default=None,
                       help="HOST:PORT of a server to do this through (default: the server that holds --store, "
                            "if one is running; otherwise the store is opened directly)")
    else:
        g.add_argument("--server", default=os.environ.get(SERVER_ENV, "127.0.0.1:50051"),
                       help=f"HOST:PORT of the ecg-atlas server (default ${SERVER_ENV} or 127.0.0.1:50051)")
    g.add_argument("--token", default=None,
                   help=f"bearer token (default: the first of ${', $'.join(TOKEN_ENVS)} that is set)")
    g.add_argument("--tls-ca", default=None, help="PEM CA certificate of the server: connect with TLS")
    g.add_argument("--client-cert", default=None, help="PEM client certificate (servers that require one)")
    g.add_argument("--client-key", default=None, help="PEM key of --client-cert")
    g.add_argument("--timeout", type=float, default=60.0, help="deadline of each call in seconds (default 60)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def connect(args: argparse.Namespace):
    from ecg_atlas.client import Client

    token = args.token or next((os.environ[e] for e in TOKEN_ENVS if os.environ.get(e)), None)
    return Client(args.server, token=token, tls_ca=args.tls_ca, client_cert=args.client_cert,
                  client_key=args.client_key, timeout=args.timeout)


def rpc_errors(run):
    """Turn a failed call into `ecg-atlas VERB: error: CODE: what the server said`."""

    @functools.wraps(run)
    def wrapped(args):
        import grpc

        from ecg_atlas.client import error_info

        try:
            return run(args)
        except grpc.RpcError as exc:
            code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
            details = exc.details() if hasattr(exc, "details") else str(exc)
            reason, _ = error_info(exc)
            if code == "UNAVAILABLE" and reason in ("", "unavailable"):
                details += f" (is a server running at {args.server}? start one with `ecg-atlas serve`)"
            raise AtlasError(f"{code}{f' ({reason})' if reason else ''}: {details}") from None

    return wrapped


def print_json(value) -> None:
    from ecg_atlas.jsonable import jsonable

    json.dump(jsonable(value), sys.stdout, indent=2)
    print()
