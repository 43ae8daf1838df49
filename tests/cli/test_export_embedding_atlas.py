"""`ecg-atlas export --format embedding-atlas` read by Apple's embedding-atlas itself: its command
line tool started on the exported file, asked through its own data endpoints (metadata.json and
the DuckDB query endpoint its page uses) for the map's columns and each ECG's neighbours, which
must be the store's own nearest neighbours (the Search RPC's, same k)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.service.conftest import WRITE_TOKEN, cli_json

pytestmark = pytest.mark.slow  # the whole corpus on a real server, a cluster run, embedding-atlas's server

RUN = "atlas_export"
K = 5
EMBEDDING_ATLAS = Path(sys.executable).with_name("embedding-atlas")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(url: str, sql: str) -> list[dict]:
    """Rows of `sql` over embedding-atlas's table, through the endpoint its page queries."""
    request = urllib.request.Request(f"{url}/data/query", data=json.dumps({"sql": sql, "type": "json"}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        return json.loads(answer.read())


def start_embedding_atlas(path: Path, folder: Path) -> tuple[subprocess.Popen, str, Path]:
    assert EMBEDDING_ATLAS.exists(), "embedding-atlas is not installed: pip install embedding-atlas (make test does)"
    port = free_port()
    log = folder / "embedding-atlas.log"
    # its cache (platformdirs) under the test's folder, not the user's home
    env = {**os.environ, "HOME": str(folder), "XDG_CACHE_HOME": str(folder / "cache")}
    process = subprocess.Popen([str(EMBEDDING_ATLAS), str(path), "--x", "x", "--y", "y", "--neighbors", "neighbors",
                                "--text", "text", "--host", "127.0.0.1", "--port", str(port), "--no-auto-port"],
                               stdout=open(log, "w"), stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    give_up = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(f"{url}/data/metadata.json", timeout=5) as answer:
                if answer.status == 200:
                    return process, url, log
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        if process.poll() is not None or time.monotonic() > give_up:
            process.kill()
            raise AssertionError(f"embedding-atlas did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)


def test_embedding_atlas_loads_the_export_with_the_stores_neighbours(corpus_server, client, tmp_path):
    client.cluster(RUN, n_epochs=30, timeout=300)
    out = tmp_path / "atlas.parquet"
    summary = cli_json("export", "--server", corpus_server.address, "--token", WRITE_TOKEN,
                       "--format", "embedding-atlas", "--run", RUN, "--neighbors", str(K), "--out", str(out))
    assignments = client.cluster_run(RUN)["assignments"]
    assert summary["rows"] == assignments.num_rows and summary["run"] == RUN
    process, url, log = start_embedding_atlas(out, tmp_path)
    try:
        with urllib.request.urlopen(f"{url}/data/metadata.json", timeout=30) as answer:
            data = json.loads(answer.read())["props"]["data"]
        assert data["projection"] == {"x": "x", "y": "y"}
        assert data["neighbors"] == "neighbors" and data["text"] == "text"
        row_id = data["id"]  # the row numbers it gives the rows it loaded, 0..n-1
        assert query(url, "SELECT count(*) AS n FROM dataset")[0]["n"] == assignments.num_rows
        # the map as the run keeps it
        xy = {r["ecg_id"]: (r["x"], r["y"]) for r in query(url, "SELECT ecg_id, x, y FROM dataset")}
        stored = dict(zip(assignments.column("ecg_id").to_pylist(),
                          zip(assignments.column("map_x").to_pylist(), assignments.column("map_y").to_pylist())))
        assert xy.keys() == stored.keys()
        assert all(xy[e] == pytest.approx(stored[e], rel=1e-6, abs=1e-6) for e in stored)
        # each ECG's neighbours as its page looks them up: the neighbours cell by row id, then those rows
        for row in (0, 7, assignments.num_rows - 1):
            first = query(url, f'SELECT ecg_id, "neighbors" AS knn FROM dataset WHERE "{row_id}" = {row}')
            assert len(first) == 1
            ecg_id, knn = first[0]["ecg_id"], first[0]["knn"]
            assert len(knn["ids"]) == K and row not in knn["ids"]
            listed = ", ".join(map(str, knn["ids"]))
            names = {r["i"]: r["ecg_id"]
                     for r in query(url, f'SELECT "{row_id}" AS i, ecg_id FROM dataset WHERE "{row_id}" IN ({listed})')}
            shown = [names[i] for i in knn["ids"]]
            hits = client.search(ecg_id=ecg_id, k=K, exclude_self=True).hits
            assert knn["distances"] == pytest.approx([1 - h.score for h in hits], abs=1e-4)
            # the same ECGs in the same order, up to exact ties (duplicate recordings)
            for mine, hit, distance in zip(shown, hits, knn["distances"]):
                assert mine == hit.ecg_id or any(abs(d - distance) < 1e-5 for d, other in
                                                 zip(knn["distances"], shown) if other == hit.ecg_id), (ecg_id, shown)
    finally:
        process.terminate()
        process.wait(30)
