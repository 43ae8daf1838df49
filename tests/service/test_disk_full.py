"""A full disk under a real server: the client gets RESOURCE_EXHAUSTED "no space left on the
store's disk" (no path), the log an ERROR with the OS error, reads go on, writes resume when space
returns, and SIGTERM while full exits 0 without losing an acknowledged ECG. A server started on a
disk that is full already comes up and serves reads. No log line above DEBUG names the store's
path, in any of these cases.

The store lives on a small tmpfs this test mounts (tests/small_disk.py: CI runs as root; where
mounting is refused the test fails saying so).
"""

from __future__ import annotations

import errno
import re
import signal

import grpc
import pytest

from ecg_atlas.client import IngestItem, error_info
from ecg_atlas.embedder import read_ecg
from tests.small_disk import fill, mounted_tmpfs

from .conftest import start_server

DISK_MB = 32
#: Room left beside the ballast: a few ECGs fit, then the disk is full.
SLACK_BYTES = 1 << 20
RECORDS = [f"cinc_cpsc2018/A000{i}" for i in range(1, 10)]


@pytest.fixture()
def small_disk(tmp_path):
    with mounted_tmpfs(tmp_path / "disk", DISK_MB) as mount_point:
        yield mount_point


def _ingest_until_full(client, recordings, prefix: str, acknowledged: list[str], limit: int = 200) -> grpc.RpcError:
    """One ECG per call (each acknowledged by its summary) until the server refuses a write."""
    recs = list(recordings.values())
    for i in range(limit):
        rec = recs[i % len(recs)]
        ecg_id = f"{prefix}/{i}"
        try:
            summary = client.ingest([IngestItem(ecg_id, rec.signal, rec.fs, rec.lead_names, patient_id=f"p-{i % 5}",
                                                metadata={"n": i})])
        except grpc.RpcError as exc:
            return exc
        assert (summary.stored, summary.failed) == (1, 0), summary
        acknowledged.append(ecg_id)
    raise AssertionError(f"{limit} ECGs fitted on a full disk")


@pytest.mark.slow
def test_disk_full_is_diagnosable_reads_go_on_writes_resume_and_shutdown_keeps_everything(
        tmp_path, small_disk, tiny_checkpoint, ecg_dir):
    recordings = {r: read_ecg(ecg_dir / r) for r in RECORDS}
    store = small_disk / "store"
    logs = tmp_path / "logs"
    acknowledged: list[str] = []
    server = start_server(store, tiny_checkpoint, logs)
    try:
        with server.client() as c:
            summary = c.ingest([IngestItem(f"before/{r}", rec.signal, rec.fs, rec.lead_names)
                                for r, rec in recordings.items()])
            assert summary.stored == len(RECORDS)
            acknowledged += [f"before/{r}" for r in RECORDS]

            # 1. The disk fills mid-ingest: RESOURCE_EXHAUSTED, a message a person can act on, no path.
            ballast = fill(small_disk, SLACK_BYTES)
            refused = _ingest_until_full(c, recordings, "full", acknowledged)
            assert any(a.startswith("full/") for a in acknowledged), "the disk was full before any ECG fitted"
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, (refused.code(), refused.details())
            assert "no space left on the store's disk" in refused.details()
            assert "/" not in refused.details() and str(small_disk) not in refused.details()
            log = server.log()
            assert re.search(r" ERROR ecg_atlas\.index\.store: .*No space left on device", log), log[-3000:]
            assert "Traceback" not in log and "internal server error" not in log
            assert str(small_disk) not in log, "a log line names the store's path"

            # 2. Reads go on while the disk is full.
            found, missing = c.get(acknowledged)
            assert not missing and [e.ecg_id for e in found] == acknowledged
            hits = c.search(ecg_id=acknowledged[-1], k=3).hits
            assert len(hits) == 3
            # Refused again, the same way, while still full (the store is not left broken).
            again = _ingest_until_full(c, recordings, "still-full", acknowledged, limit=3)
            assert again.code() == grpc.StatusCode.RESOURCE_EXHAUSTED

            # 3. Space returns: writes resume without a restart.
            ballast.unlink()
            summary = c.ingest([IngestItem("after-space/1", recordings[RECORDS[0]].signal, recordings[RECORDS[0]].fs,
                                           recordings[RECORDS[0]].lead_names)])
            assert summary.stored == 1
            acknowledged.append("after-space/1")
            assert c.search(ecg_id="after-space/1", k=1).hits

            # 4. Full again, then SIGTERM: a clean exit.
            fill(small_disk, SLACK_BYTES)
            refused = _ingest_until_full(c, recordings, "full-again", acknowledged)
            assert refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        code = server.stop(signal.SIGTERM, timeout=60)
        log = server.log()
        assert code == 0, f"serve exited {code} on SIGTERM with a full disk:\n{log[-3000:]}"
        assert "Traceback" not in log and "FatalException" not in log, log[-3000:]
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(30)

    # 5. Restart on the same store (space freed): every acknowledged ECG is there and searchable.
    (small_disk / "ballast").unlink()
    server = start_server(store, tiny_checkpoint, logs)
    try:
        with server.client() as c:
            found, missing = c.get(acknowledged)
            assert not missing, f"{len(missing)} of {len(acknowledged)} acknowledged ECGs lost"
            info = c.info()
            assert int(info["ecg_count"]) >= len(acknowledged)
            assert int(info["ecg_count"]) == int(info["index_entries"])
            for ecg_id in acknowledged[:: max(1, len(acknowledged) // 5)]:
                assert c.search(ecg_id=ecg_id, k=1).hits
    finally:
        assert server.stop() == 0


@pytest.mark.slow
def test_a_server_starts_on_a_full_disk_serves_reads_and_refuses_writes(tmp_path, small_disk, tiny_checkpoint, ecg_dir):
    """The store's disk is full before the server starts, after a kill -9 left committed ECGs in
    DuckDB's WAL only and the index file was deleted: the server comes up (no server.json: a
    WARNING says so), every acknowledged ECG is read and searched, a write is RESOURCE_EXHAUSTED
    ``disk_full``, SIGTERM exits 0. Every server runs at -vv; no record above DEBUG names a path."""
    recordings = {r: read_ecg(ecg_dir / r) for r in RECORDS}
    store, logs = small_disk / "store", tmp_path / "logs"

    def items(prefix: str) -> list[IngestItem]:
        return [IngestItem(f"{prefix}/{r}", rec.signal, rec.fs, rec.lead_names, metadata={"n": i})
                for i, (r, rec) in enumerate(recordings.items())]

    servers = [start_server(store, tiny_checkpoint, logs, verbose=2)]
    with servers[-1].client() as c:
        assert c.ingest(items("saved")).stored == len(RECORDS)
    assert servers[-1].stop() == 0  # the index file is saved and DuckDB checkpointed
    servers.append(start_server(store, tiny_checkpoint, logs, verbose=2))
    with servers[-1].client() as c:
        assert c.ingest(items("wal")).stored == len(RECORDS)
    servers[-1].stop(signal.SIGKILL)  # these are in the WAL only; server.json stays behind
    index_files = list(store.glob("index-*"))
    assert index_files and (store / "server.json").exists() and (store / "store.duckdb.wal").exists()
    for file in index_files:
        file.unlink()
    acknowledged = [i.ecg_id for i in items("saved") + items("wal")]

    fill(small_disk)
    server = start_server(store, tiny_checkpoint, logs, verbose=2)
    servers.append(server)
    try:
        with server.client() as c:
            found, missing = c.get(acknowledged)
            assert not missing and [e.ecg_id for e in found] == acknowledged
            info = c.info()
            assert int(info["ecg_count"]) == int(info["index_entries"]) == len(acknowledged)
            for ecg_id in acknowledged[::4]:  # each recording is stored twice: the two copies tie
                hits = c.search(ecg_id=ecg_id, k=2).hits
                assert ecg_id in {h.ecg_id for h in hits} and hits[0].score == pytest.approx(1.0, abs=1e-4)
            with pytest.raises(grpc.RpcError) as refused:
                c.ingest(items("full")[:1])
            assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, refused.value.details()
            assert error_info(refused.value)[0] == "disk_full"
        assert not (store / "server.json").exists()  # the killed server's address is not advertised
        assert server.stop() == 0
    finally:
        if server.process.poll() is None:
            server.process.kill()
            server.process.wait(30)

    log = server.log()
    assert "serving without server.json" in log and "give them --server" in log
    assert re.search(r" WARNING ecg_atlas\.index\.\w+: index file not usable", log), log[-3000:]
    assert re.search(r" ERROR ecg_atlas\.index\.store: .*No space left on device", log), log[-3000:]
    for each in servers:
        lines = each.lines_above_debug()
        assert any(" INFO " in line for line in lines)
        assert not [line for line in lines if str(tmp_path) in line], "a line above DEBUG names a path"
        assert not [line for line in lines if "Traceback" in line]


def test_store_recovers_from_a_failed_checkpoint_and_reports_other_os_errors(small_disk, monkeypatch):
    """The paths the server test does not reach: DuckDB's automatic checkpoint failing on a full
    disk (the COMMIT is durable but the database is invalidated and must be reopened), and an OS
    write error other than a full disk (an I/O error while saving the index file)."""
    import numpy as np

    from ecg_atlas.errors import StorageFullError, StorageUnavailableError
    from ecg_atlas.index import EncoderIdentity, Store

    identity = EncoderIdentity("m", "a" * 64, "v1", 64)
    rng = np.random.default_rng(0)

    def batch(tag: str, n: int = 64) -> tuple[list[str], np.ndarray]:
        return [f"{tag}/{i}" for i in range(n)], rng.standard_normal((n, 64)).astype(np.float32)

    stored: dict[str, np.ndarray] = {}
    with Store.open(small_disk / "s", identity=identity) as store:
        store._con.execute("SET wal_autocheckpoint = '256KB'")  # checkpoint often: one will hit the full disk
        ballast = fill(small_disk, 2 << 20)
        fatal = None
        for b in range(500):
            ids, vectors = batch(f"b{b}")
            try:
                store.upsert(ids, vectors, identity=identity, segment_vectors=[np.tile(v, (8, 1)) for v in vectors])
            except StorageFullError as exc:
                fatal = exc
                break
            stored.update(zip(ids, vectors))
        assert fatal is not None and fatal.reason == "disk_full" and "/" not in str(fatal)
        assert "durable, but the autocheckpoint failed" in str(fatal.__cause__), fatal.__cause__
        # Reads go on (after a failed checkpoint the database was reopened at once).
        some = list(stored)[:: max(1, len(stored) // 20)]
        assert [r["ecg_id"] for r in store.get(some, columns=["ecg_id"])] == some
        info = store.info()
        assert info.n_ecgs == info.n_index_entries >= len(stored)  # a durable COMMIT whose checkpoint failed counts
        ballast.unlink()
        ids, vectors = batch("after")
        store.upsert(ids, vectors, identity=identity)
        stored.update(zip(ids, vectors))

        # Another OS error (an I/O error while saving the index file): UNAVAILABLE's error class.
        def broken_save(path: str) -> None:
            with open(path, "wb"):
                raise OSError(errno.EIO, "Input/output error")

        monkeypatch.setattr(store._index, "save", broken_save)
        with pytest.raises(StorageUnavailableError) as refused:
            store.checkpoint()
        assert refused.value.reason == "storage_error" and "/" not in str(refused.value)
        assert not list((small_disk / "s").glob("*.tmp"))
        monkeypatch.undo()
        assert store.get(["after/0"], columns=["ecg_id"])
    with Store.open(small_disk / "s") as store:
        found = {r["ecg_id"] for r in store.get(list(stored), columns=["ecg_id"])}
        assert found == set(stored)
        hits = store.search(np.stack(list(stored.values())), k=1)
        assert [h[0].ecg_id for h in hits] == list(stored)


def test_a_store_on_a_full_disk_opens_and_keeps_its_recorded_contract(small_disk, caplog):
    """A server records its encoder's contract at every start; on a full disk that write is
    refused (logged, no path) and the store opens and reads as before."""
    import logging

    import numpy as np

    from ecg_atlas.index import EncoderIdentity, Store

    identity = EncoderIdentity("m", "a" * 64, "v1", 16)
    ids = [f"e{i}" for i in range(8)]
    with Store.open(small_disk / "s", identity=identity) as store:
        store.upsert(ids, np.random.default_rng(1).standard_normal((8, 16)), identity=identity)
        store.record_encoder_contract({"version": 1})
    ballast = fill(small_disk)
    with caplog.at_level(logging.INFO), Store.open(small_disk / "s", identity=identity) as store:
        store.record_encoder_contract({"version": 2})
        assert store.info().encoder_contract == {"version": 1}
        assert [r["ecg_id"] for r in store.get(ids, columns=["ecg_id"])] == ids
        assert [h[0].ecg_id for h in store.search(ecg_ids=ids[:2], k=1)]
    refused = [r for r in caplog.records if "contract was not recorded" in r.getMessage()]
    assert refused and refused[0].levelname == "WARNING"
    assert not [r for r in caplog.records if str(small_disk) in r.getMessage()]
    ballast.unlink()
    with Store.open(small_disk / "s", identity=identity) as store:
        store.record_encoder_contract({"version": 2})
        assert store.info().encoder_contract == {"version": 2}
