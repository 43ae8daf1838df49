"""A store made with the first bundled release keeps working with it after v2 became the default.

Real servers on loopback, real ECG files: a v1 store is served with ``--checkpoint bundled:v1``; the
default server (v2) refuses that store by the store's identity rule and names the fix; the v1 server
serves it again with nothing lost.
"""

from __future__ import annotations

from ecg_atlas.embedder import weights

from .conftest import WRITE_TOKEN, cli_json, start_server

RECORDS = ["cinc_cpsc2018/A0001", "cinc_ptb/S0001"]
IDS = ["A0001", "S0001"]  # a file named on the command line is stored under its name


def test_a_v1_store_keeps_working_with_v1_and_refuses_v2(tmp_path, ecg_dir):
    store, logs = tmp_path / "store", tmp_path / "logs"
    v1 = weights.RELEASES["v1"]
    server = start_server(store, v1.spec, logs)
    try:
        with server.client() as client:
            assert client.info()["model_id"] == v1.name
        result = cli_json("ingest", *[str(ecg_dir / f"{r}.hea") for r in RECORDS], "--server", server.address,
                          "--token", WRITE_TOKEN)
        assert result["stored"] == len(RECORDS)
    finally:
        assert server.stop() == 0

    default = start_server(store, None, logs, wait=False)  # bundled = v2
    rc = default.process.wait(timeout=120)
    log = default.log()
    assert rc != 0, log
    assert "refusing vectors from" in log and weights.CURRENT.name in log and v1.name in log
    assert f"--checkpoint {v1.spec}" in log  # the way out is named

    again = start_server(store, v1.spec, logs)
    try:
        with again.client() as client:
            info = client.info()
            assert info["model_id"] == v1.name and int(info["ecg_count"]) == len(RECORDS)
            hits = client.search(ecg_id=IDS[0], k=1, exclude_self=True).hits
            assert [h.ecg_id for h in hits] == [IDS[1]]
    finally:
        assert again.stop() == 0
