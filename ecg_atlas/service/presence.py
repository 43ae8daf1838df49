"""A running server says so in its store: ``<store>/server.json`` (address, pid, TLS), written when
it is ready and removed when it stops. Command-line verbs that take ``--store`` read it to go
through the server's RPCs instead of failing on DuckDB's file lock. It holds no token and no
patient data; a file left by a killed server is ignored once its pid is gone.

A store disk that refuses the file (full, read-only) does not stop the server: it serves without
announcing itself (a WARNING says so), and those verbs then need ``--server ADDRESS``.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

log = logging.getLogger(__name__)

FILE = "server.json"


def announce(store: str | os.PathLike, address: str, tls: bool) -> Path | None:
    """Write ``server.json``; None (logged, no path named) when the disk refuses it."""
    from ecg_atlas.atomic import write_atomic

    path = Path(store) / FILE
    body = json.dumps({"address": address, "pid": os.getpid(), "tls": tls}).encode()
    try:
        write_atomic(path, lambda tmp: Path(tmp).write_bytes(body))
    except OSError as exc:
        log.warning("serving without %s in the store (the disk refused it: %s); command-line verbs given "
                    "--store will not find this server: give them --server %s", FILE,
                    exc.strerror or type(exc).__name__, address)
        _withdraw_stale(store)
        return None
    return path


def withdraw(store: str | os.PathLike) -> None:
    path = Path(store) / FILE
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _withdraw_stale(store: str | os.PathLike) -> None:
    """Remove a ``server.json`` whose server is gone (removing a file needs no free space)."""
    path = Path(store) / FILE
    if path.exists() and running_server(store) is None:
        try:
            path.unlink()
        except OSError:
            pass


def running_server(store: str | os.PathLike) -> dict | None:
    """{"address", "pid", "tls"} of the live server holding `store`, or None."""
    try:
        info = json.loads((Path(store) / FILE).read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info
