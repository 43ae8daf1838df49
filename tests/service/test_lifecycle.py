"""Servers that restart, get killed, shut down, refuse unsafe binds, limit load and speak TLS."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import grpc
import numpy as np
import pytest

from ecg_atlas.client import Client, IngestItem
from ecg_atlas.embedder import read_ecg
from ecg_atlas.index import Store
from ecg_atlas.v1 import atlas_pb2 as pb
from ecg_atlas.v1 import atlas_pb2_grpc as pb_grpc

from .conftest import CLI, READ_TOKEN, WRITE_TOKEN, start_server

RECORDS = [f"cinc_cpsc2018/A000{i}" for i in range(1, 10)] + [f"cinc_georgia/E0000{i}" for i in range(1, 10)]


@pytest.fixture(scope="module")
def recordings(ecg_dir):
    return {r: read_ecg(ecg_dir / r) for r in RECORDS}


def _items(recordings, prefix, copies=1):
    return [IngestItem(f"{prefix}/{c}/{r}", rec.signal, rec.fs, rec.lead_names, patient_id=f"p-{r[-2:]}",
                       metadata={"copy": c}) for c in range(copies) for r, rec in recordings.items()]


def _assert_searchable(client, ecg_ids):
    found, missing = client.get(ecg_ids)
    assert not missing, f"{len(missing)} acknowledged ECGs lost"
    for ecg_id in ecg_ids[:: max(1, len(ecg_ids) // 6)]:
        hits = client.search(ecg_id=ecg_id, k=5).hits  # copies of one recording tie at the top
        assert hits[0].score == pytest.approx(1.0, abs=1e-4)
        assert ecg_id in {h.ecg_id for h in hits if h.score > 1 - 1e-4}
    info = client.info()
    assert int(info["ecg_count"]) == int(info["index_entries"])


@pytest.mark.slow
def test_a_stream_longer_than_the_in_flight_limit_counts_every_id_once(tmp_path, tiny_checkpoint, recordings):
    # With --max-ingest-in-flight 8 the server starts ids 2 at a time and collects finished ECGs
    # until a group fits: a 38-item stream crosses that limit many times. Stored, new, replaced
    # and repeated ids interleaved over it must each be counted once, and keep the right ECG.
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs", "--max-ingest-in-flight", "8")
    recs = list(recordings.values())
    try:
        with server.client() as c:
            def item(i, r, **kw):
                return IngestItem(f"limit/{i}", recs[r].signal, recs[r].fs, recs[r].lead_names, **kw)
            assert c.ingest([item(i, i % 18) for i in range(0, 36, 3)]).stored == 12  # multiples of 3
            stream = [item(i, (i + 1) % 18, replace=i % 9 == 0) for i in range(36)] + [item(7, 0), item(36, 2)]
            summary = c.ingest(stream)
            # 0, 9, 18, 27 replaced; the other 8 multiples of 3 skipped; 24 new and 36 stored; 7 sent twice
            assert (summary.stored, summary.skipped_existing, summary.failed) == (29, 8, 1)
            assert [(e.index, e.ecg_id) for e in summary.errors] == [(36, "limit/7")]
            found, missing = c.get([f"limit/{i}" for i in range(37)], vectors=True)
            assert not missing and int(c.info()["ecg_count"]) == 37
            vectors = [c.embed(r.signal, r.fs, r.lead_names).record_vector for r in recs]
            for stored in found:
                i = int(stored.ecg_id.split("/")[1])
                kept = i % 3 == 0 and i % 9 != 0  # skipped: still the first stream's ECG
                expected = vectors[2] if i == 36 else vectors[i % 18 if kept else (i + 1) % 18]
                assert np.allclose(stored.record_vector, expected, atol=1e-5), stored.ecg_id
    finally:
        server.stop()


@pytest.mark.slow
def test_restart_with_the_same_store_keeps_everything(tmp_path, tiny_checkpoint, recordings):
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs")
    with server.client() as c:
        summary = c.ingest(_items(recordings, "restart"))
        assert summary.stored == len(RECORDS)
        c.update_metadata({f"restart/0/{RECORDS[0]}": {"note": "kept"}})
        served_contract = json.loads(c.info()["encoder_contract_json"])
    assert server.stop() == 0
    with Store.open(tmp_path / "store", read_only=True, with_index=False) as store:  # how its vectors were made
        assert store.info().encoder_contract == served_contract and served_contract["name"] == "ECG-FM"
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs")
    try:
        with server.client() as c:
            ids = [i.ecg_id for i in _items(recordings, "restart")]
            _assert_searchable(c, ids)
            assert c.get([ids[0]])[0][0].metadata["note"] == "kept"
    finally:
        server.stop()


@pytest.mark.slow
def test_kill_9_during_ingest_loses_no_acknowledged_ecg(tmp_path, tiny_checkpoint, recordings):
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs")
    acknowledged = _items(recordings, "acked")
    with server.client() as c:
        assert c.ingest(acknowledged).stored == len(acknowledged)
    outcome = {}

    def ingest_more():
        with server.client() as c:
            try:
                outcome["summary"] = c.ingest(_items(recordings, "inflight", copies=20))
            except grpc.RpcError as exc:
                outcome["error"] = exc.code()

    writer = threading.Thread(target=ingest_more)
    writer.start()
    with server.client() as c:  # kill once the second stream has written something
        for _ in range(600):
            if int(c.info()["ecg_count"]) > len(acknowledged) or "summary" in outcome:
                break
            time.sleep(0.05)
    server.process.send_signal(signal.SIGKILL)
    writer.join(60)
    assert "error" in outcome  # the stream was cut: nothing of it was acknowledged
    server.process.wait(30)
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs")
    try:
        with server.client() as c:
            _assert_searchable(c, [i.ecg_id for i in acknowledged])
    finally:
        server.stop()


@pytest.mark.slow
def test_sigterm_finishes_a_running_ingest_before_exiting(tmp_path, tiny_checkpoint, recordings):
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs")
    items = _items(recordings, "graceful", copies=3)
    started = threading.Event()
    outcome = {}

    def slow_items():
        for n, item in enumerate(items):
            if n == 5:
                started.set()
            yield item

    def ingest():
        with server.client() as c:
            outcome["summary"] = c.ingest(slow_items())

    writer = threading.Thread(target=ingest)
    writer.start()
    assert started.wait(60)
    server.process.send_signal(signal.SIGTERM)
    writer.join(120)
    assert server.process.wait(120) == 0
    assert outcome["summary"].stored == len(items)  # acknowledged after the shutdown began
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs")
    try:
        with server.client() as c:
            _assert_searchable(c, [i.ecg_id for i in items])
    finally:
        server.stop()


def _info_until(client, outcome: str, timeout: float = 30.0):
    """Call Info until it is refused RESOURCE_EXHAUSTED (``outcome="refused"``, the RpcError) or
    answered (``"answered"``, the Info), within `timeout`: the server takes and frees its
    concurrency slots on its own threads, so the test waits for the state, never a guessed time."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            info = client.info()
            if outcome == "answered":
                return info
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            if outcome == "refused":
                return exc
        assert time.monotonic() < deadline, f"Info not {outcome} within {timeout} s"
        time.sleep(0.01)  # between tries of a bounded wait for the condition above


@pytest.mark.slow
def test_too_many_concurrent_rpcs_get_resource_exhausted(tmp_path, tiny_checkpoint, recordings):
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs", "--max-concurrent-rpcs", "1")
    release = threading.Event()
    holding = threading.Event()
    first = _items(recordings, "held")[0]
    outcome = {}

    def held_stream():  # an Ingest that stays open until released: it occupies the only slot
        from ecg_atlas.client import ingest_request

        yield ingest_request(first)
        holding.set()
        release.wait(60)

    # One channel for both calls: the Ingest's headers go out on the connection before any Info's,
    # so the server counts the Ingest first and no Info can take the slot from it.
    with server.client() as c:
        writer = threading.Thread(target=lambda: outcome.update(summary=c.ingest(held_stream())))
        writer.start()
        try:
            assert holding.wait(60)
            _info_until(c, "refused")  # while the Ingest holds the only slot
            release.set()
            writer.join(60)
            assert outcome["summary"].stored == 1
            # The Ingest's response can reach the client before the server has freed its slot.
            assert int(_info_until(c, "answered")["ecg_count"]) == 1  # serving again once the slot is free
        finally:
            release.set()
            writer.join(60)
            server.stop()


@pytest.mark.slow
def test_a_public_bind_without_tls_and_token_is_refused(tmp_path, tiny_checkpoint):
    done = subprocess.run([str(CLI), "serve", "--store", str(tmp_path / "s"), "--checkpoint", str(tiny_checkpoint),
                           "--host", "0.0.0.0", "--port", "0"], capture_output=True, text=True, timeout=120,
                          env={"PATH": "/usr/bin:/bin"})
    assert done.returncode == 2
    assert "refusing to listen on 0.0.0.0" in done.stderr and "--insecure" in done.stderr
    assert not (tmp_path / "s").exists()


def _self_signed(tmp_path):
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


@pytest.mark.slow
def test_tls_round_trip_with_a_self_signed_certificate(tmp_path, tiny_checkpoint, recordings):
    cert, key = _self_signed(tmp_path)
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs", "--tls-cert", str(cert),
                          "--tls-key", str(key), wait=False)
    try:
        with Client(server.address, token=WRITE_TOKEN, tls_ca=cert) as c:
            c.wait_ready(timeout=120)
            info = c.info()
            assert info["tls"] is True
            record, recording = next(iter(recordings.items()))
            assert c.ingest(_items({record: recording}, "tls")).stored == 1
            assert c.search(ecg_id=f"tls/0/{record}", k=1).hits[0].score == pytest.approx(1.0, abs=1e-4)
        with Client(server.address, token=READ_TOKEN, timeout=10) as plaintext:
            with pytest.raises(grpc.RpcError) as err:
                plaintext.info()
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        server.stop()


def _client_certificate(tmp_path):
    """A CA and a client certificate it signed (for --tls-client-ca)."""
    ca_key, ca, key, csr, cert = (tmp_path / n for n in ("ca.key", "ca.pem", "client.key", "client.csr", "client.pem"))
    def run(*args):
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(ca_key), "-out", str(ca), "-days", "1",
        "-subj", "/CN=ecg-atlas test CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr), "-subj", "/CN=research-client")
    run("x509", "-req", "-in", str(csr), "-CA", str(ca), "-CAkey", str(ca_key), "-CAcreateserial", "-out", str(cert),
        "-days", "1")
    return ca, cert, key


@pytest.mark.slow
def test_client_certificates_are_required_when_a_client_ca_is_configured(tmp_path, tiny_checkpoint):
    server_cert, server_key = _self_signed(tmp_path)
    ca, client_cert, client_key = _client_certificate(tmp_path)
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs", "--tls-cert", str(server_cert),
                          "--tls-key", str(server_key), "--tls-client-ca", str(ca), wait=False)
    try:
        with Client(server.address, token=READ_TOKEN, tls_ca=server_cert, client_cert=client_cert,
                    client_key=client_key) as c:
            c.wait_ready(timeout=120)
            assert c.info()["tls"] is True
        with Client(server.address, token=READ_TOKEN, tls_ca=server_cert, timeout=10) as no_cert:
            with pytest.raises(grpc.RpcError) as err:
                no_cert.info()
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE  # the TLS handshake is refused
    finally:
        server.stop()


@pytest.mark.slow
def test_health_is_not_serving_and_rpcs_unavailable_until_warm(tmp_path, tiny_checkpoint):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    # A big first batch makes the warm-up long enough to observe from outside.
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs", "--max-batch-segments", "512",
                          "--max-queue-segments", "4096", wait=False)
    try:
        with grpc.insecure_channel(server.address) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            with pytest.raises(grpc.RpcError) as err:
                pb_grpc.AtlasStub(channel).Info(pb.InfoRequest(),
                                                metadata=(("authorization", f"Bearer {READ_TOKEN}"),), timeout=10)
            assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        with server.client() as c:
            c.wait_ready(timeout=180)
            assert c.info()["limits"]["max_batch_segments"] == 512
    finally:
        server.stop()


@pytest.mark.slow
def test_with_no_checkpoint_the_bundled_encoder_serves_and_says_so(tmp_path, recordings):
    server = start_server(tmp_path / "store", None, tmp_path / "logs")  # no --checkpoint at all
    try:
        with server.client() as c:
            info = c.info()
            assert info["model_id"] == "ecg-atlas-small-v3" and int(info["dim"]) == 256
            assert "bundled open encoder ecg-atlas-small-v3" in info["encoder_notice"]
            assert "not ECG-FM's published model" in info["encoder_notice"]
            record, recording = next(iter(recordings.items()))
            assert c.ingest(_items({record: recording}, "bundled")).stored == 1
            assert c.search(ecg_id=f"bundled/0/{record}", k=1).hits[0].score == pytest.approx(1.0, abs=1e-4)
    finally:
        server.stop()
    assert "bundled open encoder ecg-atlas-small-v3" in server.log()  # said at start-up too


@pytest.mark.slow
def test_fast_int8_server_embeds_close_to_fp32_and_says_so(tmp_path, tiny_checkpoint, recordings):
    from ecg_atlas.embedder import load_encoder, preprocess

    record, recording = next(iter(recordings.items()))
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs", "--device", "cpu", "--fast", "int8")
    try:
        with server.client() as c:
            assert c.info()["dtype"] == "float32+int8"
            fast = c.embed(recording.signal, recording.fs, recording.lead_names).record_vector
    finally:
        server.stop()
    exact = load_encoder(tiny_checkpoint).embed(preprocess(recording)).mean(axis=0)
    cosine = float(fast @ exact / (np.linalg.norm(fast) * np.linalg.norm(exact)))
    assert 0.99 < cosine < 1.0 - 1e-9  # close to fp32, yet really the quantised computation


@pytest.mark.parametrize("env, expected", [
    ({}, {"arena_max": True, "thresholds": True, "trim_thread": True}),
    ({"MALLOC_MMAP_THRESHOLD_": "131072"}, {"arena_max": True, "thresholds": False, "trim_thread": True}),
    ({"ECG_ATLAS_MALLOC_TUNING": "0"}, {"arena_max": False, "thresholds": False, "trim_thread": False}),
])
def test_serve_tunes_glibc_malloc_unless_the_environment_says_otherwise(env, expected):
    # A fresh interpreter: mallopt must run before threads start, and settings are process-wide.
    code = "import json; from ecg_atlas.service.allocator import tune_malloc; print(json.dumps(tune_malloc()))"
    inherited = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "ECG_ATLAS_MALLOC"))}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**inherited, **env})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == expected


@pytest.mark.slow
def test_serve_never_says_listening_when_it_cannot_serve(tmp_path):
    """A missing checkpoint fails after the port is bound: stdout must not claim a running server."""
    import subprocess

    from .conftest import CLI

    done = subprocess.run([str(CLI), "serve", "--store", str(tmp_path / "store"), "--checkpoint",
                           str(tmp_path / "no-such.pt"), "--device", "cpu", "--port", "0"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert done.stdout.startswith("starting on ") and "listening on" not in done.stdout
    assert "no-such.pt" in done.stderr
