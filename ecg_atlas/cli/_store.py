"""Verbs that take ``--store`` work whether or not a server holds that store.

A running ``ecg-atlas serve`` keeps DuckDB's lock on its store, so opening the files would fail.
These verbs go through the server's RPCs when ``--server`` names one or when the store says a
live server holds it (``<store>/server.json``), and open the store directly only when none does.
The verb says which path it took (stderr, and ``"via"`` in ``--json`` output).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass

from ecg_atlas.errors import AtlasError


@dataclass
class Access:
    via: str  # "server" or "store"
    where: str  # the server's address or the store directory

    def describe(self) -> str:
        return (f"through the server at {self.where}" if self.via == "server"
                else f"opening the store {self.where} directly (no server holds it)")


def access(args: argparse.Namespace) -> Access:
    """Decide how this invocation reaches the store, and say so on stderr."""
    from ecg_atlas.service.presence import running_server

    if args.server:
        chosen = Access("server", args.server)
    else:
        if not getattr(args, "store", None):
            raise AtlasError("name the store (--store DIR) or a server (--server HOST:PORT)")
        info = running_server(args.store)
        if info is None:
            chosen = Access("store", str(args.store))
        else:
            if info.get("tls") and not args.tls_ca:
                raise AtlasError(f"the server at {info['address']} holding {args.store} uses TLS: pass --tls-ca "
                                 f"(and a token) to go through it")
            args.server = info["address"]
            chosen = Access("server", info["address"])
    print(f"ecg-atlas {args.command}: {chosen.describe()}", file=sys.stderr, flush=True)
    return chosen
