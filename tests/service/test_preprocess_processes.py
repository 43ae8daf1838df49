"""`serve --preprocess-processes N`: ECGs decoded and preprocessed on worker processes, segments
back through shared memory (ecg_atlas/service/prepare_pool.py), against real servers on loopback: the
same vectors, stored fields and errors as the thread path, a killed worker costs only the ECGs it
had in flight, and a stopped server leaves no shared memory and no worker behind."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from ecg_atlas.client import IngestItem, error_info
from ecg_atlas.embedder import prepare
from ecg_atlas.embedder.discover import find_ecgs, read_source
from ecg_atlas.v1 import atlas_pb2 as pb

from .conftest import cli, start_server

LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:  # gone meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def _workers(server) -> list[int]:
    """The server's preprocessing processes: the children of its forkserver."""
    forkservers = [pid for pid in _children(server.process.pid)
                   if b"multiprocessing.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes()]
    return [pid for fs in forkservers for pid in _children(fs)]


def _cpu_ticks(pids: list[int]) -> int:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total


def _shared_memory_of(pid: int) -> set[str]:
    """Names in /dev/shm the process has mapped (its blocks and multiprocessing's semaphores)."""
    maps = Path(f"/proc/{pid}/maps").read_text()
    return {line.split("/dev/shm/", 1)[1].split(" ")[0] for line in maps.splitlines() if "/dev/shm/" in line}


def _blocks_of(server) -> list[str]:
    return sorted(p.name for p in Path("/dev/shm").glob(f"ecg-atlas-{server.process.pid}-*"))


@pytest.fixture(scope="module")
def records(ecg_dir):
    """The first recording of every database in the sample corpus that the server embeds."""
    chosen: dict[str, object] = {}
    for source in find_ecgs([ecg_dir]):
        database = source.ecg_id.split("/", 1)[0]
        if database in chosen:
            continue
        try:
            recording = read_source(source)
            prepare(recording, min_leads=8)  # the server's default
        except ValueError:
            continue
        chosen[database] = recording
    assert len(chosen) >= 5
    return chosen


@pytest.fixture(scope="module")
def thread_server(tmp_path_factory, tiny_checkpoint):
    """The default settings: on a CPU, preprocessing stays on threads."""
    root = tmp_path_factory.mktemp("preprocess-threads")
    server = start_server(root / "store", tiny_checkpoint, root / "logs")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def process_server(tmp_path_factory, tiny_checkpoint):
    root = tmp_path_factory.mktemp("preprocess-processes")
    server = start_server(root / "store", tiny_checkpoint, root / "logs", "--preprocess-processes", "2")
    yield server
    server.stop()


@pytest.mark.slow
def test_processes_embed_exactly_as_threads_do(thread_server, process_server, records):
    assert _workers(thread_server) == []  # auto on a CPU: threads
    workers = _workers(process_server)
    assert workers, "the process server runs no preprocessing processes"
    busy_before = _cpu_ticks(workers)
    with thread_server.client() as on_threads, process_server.client() as on_processes:
        for _ in range(3):  # enough work for the workers' CPU time to show it
            for name, rec in records.items():
                a = on_threads.embed(rec.signal, rec.fs, rec.lead_names, segment_vectors=True)
                b = on_processes.embed(rec.signal, rec.fs, rec.lead_names, segment_vectors=True)
                np.testing.assert_allclose(b.record_vector, a.record_vector, atol=1e-6, rtol=0, err_msg=name)
                np.testing.assert_allclose(b.segment_vectors, a.segment_vectors, atol=1e-6, rtol=0, err_msg=name)
                assert b.report == a.report, name
    assert _cpu_ticks(workers) > busy_before, "the worker processes did no work"


@pytest.mark.slow
def test_processes_ingest_exactly_as_threads_do(thread_server, process_server, records):
    items = [IngestItem.from_recording(f"ingest/{name}", rec, patient_id=f"p-{name}", metadata={"database": name})
             for name, rec in records.items()]
    ids = [item.ecg_id for item in items]
    stored = []
    for server in (thread_server, process_server):
        with server.client() as c:
            response = c.ingest(items)
            assert (response.stored, response.failed) == (len(items), 0), response.errors
            ecgs, missing = c.get(ids, vectors=True, segment_vectors=True)
            assert missing == []
            stored.append((ecgs, [c.get_signal(ecg_id) for ecg_id in ids]))
    (threads, thread_signals), (processes, process_signals) = stored
    for a, b, sa, sb in zip(threads, processes, thread_signals, process_signals):
        np.testing.assert_allclose(b.record_vector, a.record_vector, atol=1e-6, rtol=0, err_msg=a.ecg_id)
        np.testing.assert_allclose(b.segment_vectors, a.segment_vectors, atol=1e-6, rtol=0, err_msg=a.ecg_id)
        # what the worker sent back beside the segments: sampling rate, leads, duration
        for key in ("fs", "lead_names", "duration_s", "n_segments", "database"):
            assert b.metadata[key] == a.metadata[key], (a.ecg_id, key)
        assert b.patient_id == a.patient_id
        # the kept signal copy comes from the message, bit for bit
        assert (sb.fs, sb.lead_names) == (sa.fs, sa.lead_names)
        assert np.array_equal(sb.signal, sa.signal)
    assert _blocks_of(process_server) == []  # every block freed once its segments were copied out


def _bad_ecgs(records):
    rec = next(iter(records.values()))
    keep = int(2 * rec.fs)
    return {
        "too_short": (rec.signal[:, :keep], rec.fs, rec.lead_names),
        "too_few_leads": (rec.signal[:4], rec.fs, rec.lead_names[:4]),
        "implausible_amplitude": (rec.signal * np.float32(1e7), rec.fs, rec.lead_names),
    }


@pytest.mark.slow
def test_a_bad_ecg_is_refused_exactly_as_on_threads(thread_server, process_server, records):
    answers = []
    for server in (thread_server, process_server):
        with server.client() as c:
            seen = {}
            for name, (sig, fs, leads) in _bad_ecgs(records).items():
                with pytest.raises(grpc.RpcError) as caught:
                    c.embed(sig, fs, leads)
                seen[name] = (caught.value.code(), caught.value.details(), *error_info(caught.value))
            broken = pb.IngestRequest(ecg_id="bad/bytes", ecg=pb.ECG(
                lead_names=LEADS, sampling_rate_hz=500, n_leads=12, n_samples=5000,
                sample_format=pb.SAMPLE_FORMAT_FLOAT32_LE, samples=b"\0" * 12))
            items = [IngestItem(f"bad/{name}", sig, fs, leads) for name, (sig, fs, leads) in _bad_ecgs(records).items()]
            response = c.ingest([*items, broken])
            seen["ingest"] = sorted((e.ecg_id, e.code, e.reason, e.message, dict(e.details)) for e in response.errors)
            answers.append(seen)
    threads, processes = answers
    assert processes == threads
    for name in _bad_ecgs(records):
        assert threads[name][0] == grpc.StatusCode.INVALID_ARGUMENT
        assert threads[name][2] == name
    assert [reason for _, _, reason, _, _ in threads["ingest"]] == [
        "bad_signal", "implausible_amplitude", "too_few_leads", "too_short"]


@pytest.mark.slow
def test_a_killed_worker_fails_only_what_it_held_and_the_server_goes_on(tmp_path, tiny_checkpoint, records,
                                                                           thread_server):
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs", "--preprocess-processes", "2")
    try:
        rng = np.random.default_rng(0)
        # 2-minute ECGs: long enough to preprocess that the kill lands while workers hold some
        long_items = [IngestItem(f"long/{i}", (0.2 * rng.standard_normal((12, 60_000))).astype(np.float32), 500.0,
                                 LEADS) for i in range(40)]
        result = {}

        def ingest():
            with server.client() as c:
                result["response"] = c.ingest(long_items, timeout=300)

        workers = _workers(server)
        idle = _cpu_ticks(workers)
        stream = threading.Thread(target=ingest)
        stream.start()
        give_up = time.monotonic() + 60
        while _cpu_ticks(workers) <= idle + 2 and time.monotonic() < give_up:
            time.sleep(0.02)
        victim = _workers(server)[0]
        os.kill(victim, signal.SIGKILL)
        stream.join(300)
        response = result["response"]
        assert response.failed >= 1
        assert response.stored + response.failed == len(long_items)
        for error in response.errors:
            assert (error.code, error.reason) == ("ABORTED", "preprocess_crashed")
            assert "stopped unexpectedly" in error.message and "send this ECG again" in error.message
        assert victim not in _workers(server)
        # the next calls are served by fresh workers, and give the thread path's vectors
        name, rec = next(iter(records.items()))
        with server.client() as c, thread_server.client() as reference:
            again = c.ingest([item for item in long_items if item.ecg_id in {e.ecg_id for e in response.errors}])
            assert (again.stored, again.failed) == (response.failed, 0)
            np.testing.assert_allclose(c.embed(rec.signal, rec.fs, rec.lead_names).record_vector,
                                       reference.embed(rec.signal, rec.fs, rec.lead_names).record_vector,
                                       atol=1e-6, rtol=0)
        assert _workers(server) and victim not in _workers(server)
        assert "a preprocessing process stopped unexpectedly" in server.log()
    finally:
        server.stop()


@pytest.mark.slow
def test_a_stopped_server_leaves_no_shared_memory_and_no_worker(tmp_path, tiny_checkpoint, records):
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs", "--preprocess-processes", "2")
    try:
        items = [IngestItem.from_recording(f"x/{name}", rec) for name, rec in records.items()]
        with server.client() as c:
            assert c.ingest(items).stored == len(items)
        workers = _workers(server)
        mapped = set()
        for pid in [server.process.pid, *workers]:
            mapped |= _shared_memory_of(pid)
        assert any(name.startswith("sem.mp-") for name in mapped)  # the pool's queues' semaphores
    finally:
        assert server.stop() == 0
    assert _blocks_of(server) == []
    assert [name for name in mapped if (Path("/dev/shm") / name).exists()] == []
    assert [pid for pid in workers if Path(f"/proc/{pid}").exists()] == []


@pytest.mark.slow
def test_a_negative_process_count_is_refused():
    done = cli("serve", "--store", "unused", "--preprocess-processes", "-1", check=False)
    assert done.returncode != 0
    assert "preprocess_processes must be 0 (threads) or more" in done.stderr
