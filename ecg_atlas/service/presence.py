"""A running server says so in its store: ``<store>/server.json`` (address, pid, TLS), written when
it is ready and removed when it stops. Command-line verbs that take ``--store`` read it to go
through the server's RPCs instead of failing on DuckDB's file lock. It holds no token and no
patient data; a file left by a killed server is ignored once its pid is gone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

FILE = "server.json"


def announce(store: str | os.PathLike, address: str, tls: bool) -> Path:
    from ecg_atlas.index.atomic import write_atomic

    path = Path(store) / FILE
    body = json.dumps({"address": address, "pid": os.getpid(), "tls": tls}).encode()
    write_atomic(path, lambda tmp: Path(tmp).write_bytes(body))
    return path


def withdraw(store: str | os.PathLike) -> None:
    path = Path(store) / FILE
    try:
        if json.loads(path.read_text()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def running_server(store: str | os.PathLike) -> dict | None:
    """{"address", "pid", "tls"} of the live server holding `store`, or None."""
    try:
        info = json.loads((Path(store) / FILE).read_text())
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return info
