"""A store made with an earlier bundled release keeps working with it after a later one became the
default.

Real servers on loopback, real ECG files, for each earlier release (v1, v2): a store made with it is
served with ``--checkpoint bundled:vN``; the default server (the current release) refuses that store by
the store's identity rule and names the fix; the vN server serves it again with nothing lost.
"""

from __future__ import annotations

import pytest

from ecg_atlas.embedder import weights

from .conftest import WRITE_TOKEN, cli_json, start_server

RECORDS = ["cinc_cpsc2018/A0001", "cinc_ptb/S0001"]
IDS = ["A0001", "S0001"]  # a file named on the command line is stored under its name


EARLIER = [v for v, release in weights.RELEASES.items() if release is not weights.CURRENT]


@pytest.mark.parametrize("version", EARLIER)
def test_a_store_of_an_earlier_release_keeps_working_with_it_and_refuses_the_current_one(tmp_path, ecg_dir,
                                                                                         version):
    assert EARLIER == ["v1", "v2"]
    store, logs = tmp_path / "store", tmp_path / "logs"
    old = weights.RELEASES[version]
    server = start_server(store, old.spec, logs)
    try:
        with server.client() as client:
            assert client.info()["model_id"] == old.name
        result = cli_json("ingest", *[str(ecg_dir / f"{r}.hea") for r in RECORDS], "--server", server.address,
                          "--token", WRITE_TOKEN)
        assert result["stored"] == len(RECORDS)
    finally:
        assert server.stop() == 0

    default = start_server(store, None, logs, wait=False)  # bundled = the current release
    rc = default.process.wait(timeout=120)
    log = default.log()
    assert rc != 0, log
    assert "refusing vectors from" in log and weights.CURRENT.name in log and old.name in log
    assert f"--checkpoint {old.spec}" in log  # the way out is named

    again = start_server(store, old.spec, logs)
    try:
        with again.client() as client:
            info = client.info()
            assert info["model_id"] == old.name and int(info["ecg_count"]) == len(RECORDS)
            hits = client.search(ecg_id=IDS[0], k=1, exclude_self=True).hits
            assert [h.ecg_id for h in hits] == [IDS[1]]
    finally:
        assert again.stop() == 0
