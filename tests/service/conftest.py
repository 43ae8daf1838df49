"""A real `ecg-atlas serve` subprocess on loopback over a real store, shared by the service tests.

The session server (``corpus_server``, in tests/conftest.py: tests/bulk uses it too) holds the whole
sample corpus (../shared/data/ecg with manifest.csv as metadata), ingested once through the
`ecg-atlas ingest` command with the tiny real checkpoint.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ecg_atlas.client import Client

READ_TOKEN = "read-token-7f3a9c"
WRITE_TOKEN = "write-token-2b8e41"
CLI = Path(sys.executable).with_name("ecg-atlas")


@dataclass
class ServerProcess:
    process: subprocess.Popen
    address: str
    stderr_path: Path
    store: Path
    env: dict = field(default_factory=dict)

    def client(self, token: str | None = WRITE_TOKEN, **kwargs) -> Client:
        return Client(self.address, token=token, **kwargs)

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def log(self) -> str:
        return self.stderr_path.read_text()

    def lines_above_debug(self) -> list[str]:
        """Every line of the server's stderr but its DEBUG records and their tracebacks: the records
        at INFO and above, and anything else written there (a library printing to stderr). A record
        glued to the end of such a line (a message without a newline) is split off first."""
        lines = re.sub(r"(?<=[^\n])(?=" + _RECORD.pattern + ")", "\n", self.log()).splitlines()
        out, debug, previous = [], False, ""
        for line in lines:
            record = _RECORD.match(line)
            if record:
                debug = record[1] == "DEBUG"
            elif debug and (not line or line[:1].isspace() or previous[:1].isspace() or line.startswith(_TRACEBACK)):
                pass  # a DEBUG record's traceback
            else:
                debug = False
            if not debug:
                out.append(line)
            previous = line
        return out


#: The start of a log record as `ecg-atlas` formats it ("%(asctime)s %(levelname)s %(name)s: ...").
_RECORD = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ([A-Z]+) ")
_TRACEBACK = ("Traceback", "During handling", "The above exception")


def cli(*args: str, env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run([str(CLI), *args], capture_output=True, text=True, env={**os.environ, **(env or {})},
                          timeout=600)
    if check and done.returncode != 0:
        raise AssertionError(f"ecg-atlas {' '.join(args)} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return done


def cli_json(*args: str, env: dict | None = None) -> dict:
    return json.loads(cli(*args, "--json", env=env).stdout)


def start_server(store: Path, checkpoint: Path | None, log_dir: Path, *extra: str, env: dict | None = None,
                 wait: bool = True, verbose: int = 0) -> ServerProcess:
    log_dir.mkdir(parents=True, exist_ok=True)
    stderr_path = log_dir / f"server-{len(list(log_dir.glob('server-*.log')))}.log"
    environment = {**os.environ, "ECG_ATLAS_READ_TOKEN": READ_TOKEN, "ECG_ATLAS_WRITE_TOKEN": WRITE_TOKEN,
                   **(env or {})}
    process = subprocess.Popen(
        [str(CLI), *(["-" + "v" * verbose] if verbose else []), "serve", "--store", str(store),
         *(["--checkpoint", str(checkpoint)] if checkpoint else []), "--device", "cpu", "--port", "0", *extra],
        stdout=subprocess.PIPE, stderr=open(stderr_path, "w"), text=True, env=environment)
    line = process.stdout.readline()
    if not line.startswith("starting on "):
        process.kill()
        raise AssertionError(f"server did not start: {line!r}\n{stderr_path.read_text()}")
    server = ServerProcess(process, line.split()[2], stderr_path, store, environment)
    if wait:  # `serve` says "listening" only when the model is loaded and the store open
        ready = process.stdout.readline()
        if not ready.startswith(f"listening on {server.address}"):
            process.kill()
            raise AssertionError(f"server did not become ready: {ready!r}\n{stderr_path.read_text()}")
        with server.client() as c:
            c.wait_ready(timeout=120)
    return server


@pytest.fixture()
def client(corpus_server):
    with corpus_server.client() as c:
        yield c
