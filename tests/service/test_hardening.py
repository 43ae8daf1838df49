"""What a hostile client or a careless writer tried (issue: hardening), against a real server on
loopback: no file a client named is ever read, one bad item never fails a stream, junk is never
stored as an ECG, malformed requests are refused cleanly, and reflection answers v1."""

from __future__ import annotations

import csv
import os

import grpc
import numpy as np
import pytest
from grpc_reflection.v1alpha import reflection_pb2

from ecg_atlas.client import IngestItem, error_info
from ecg_atlas.embedder import prepare, read_ecg
from ecg_atlas.errors import InvalidECGError
from ecg_atlas.v1 import atlas_pb2 as pb

from .conftest import READ_TOKEN, WRITE_TOKEN, start_server

pytestmark = pytest.mark.slow  # real servers

# A record that is never ingested anywhere in this module: the target of the path escapes.
FOREIGN = "cinc_cpsc2018/A0001"
SIGNAL_UNAVAILABLE = "has no signal this server can serve"


def _synthetic(seed: int, seconds: float = 10.0, fs: float = 500.0) -> np.ndarray:
    """A 12-lead ECG-like signal in mV (beats on a slow baseline), different for every seed."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * fs)) / fs
    beats = np.exp(-(((t % (0.6 + 0.3 * rng.random())) - 0.3) ** 2) / 2e-4)
    return (rng.normal(0.8, 0.4, (12, 1)) * beats + 0.05 * np.sin(2 * np.pi * 0.3 * t)
            + 0.01 * rng.standard_normal((12, t.size))).astype(np.float32)


LEADS = ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory, ecg_dir):
    """An operator data root with one real record, plus a symlink inside it to a file outside."""
    root = tmp_path_factory.mktemp("data-root")
    rec = read_ecg(ecg_dir / "cinc_cpsc2018" / "A0003")
    np.savez(root / "inside.npz", signal=rec.signal, fs=rec.fs, lead_names=np.array(rec.lead_names))
    outside = tmp_path_factory.mktemp("outside")
    foreign = read_ecg(ecg_dir / FOREIGN)
    np.savez(outside / "foreign.npz", signal=foreign.signal, fs=foreign.fs, lead_names=np.array(foreign.lead_names))
    os.symlink(outside / "foreign.npz", root / "link.npz")
    return root, outside


@pytest.fixture(scope="module")
def kept_server(tmp_path_factory, tiny_checkpoint):
    """Default settings: the store keeps each ECG's samples; no data roots."""
    root = tmp_path_factory.mktemp("hardening-kept")
    server = start_server(root / "store", tiny_checkpoint, root / "logs", verbose=2)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def rooted_server(tmp_path_factory, tiny_checkpoint, data_root):
    """No signal copies: stored ECGs are drawn only from files under one data root."""
    root = tmp_path_factory.mktemp("hardening-rooted")
    server = start_server(root / "store", tiny_checkpoint, root / "logs", "--no-keep-signals",
                          "--data-root", str(data_root[0]), verbose=2)
    yield server
    server.stop()


# ---- 1. the server never opens a path a client chose --------------------------------------------

def test_explain_serves_the_stored_copy_never_the_file_a_source_names(kept_server, ecg_dir, tmp_path):
    foreign = read_ecg(ecg_dir / FOREIGN)
    sources = {
        "escape-relative": "../" * 12 + str(ecg_dir / FOREIGN).lstrip("/"),
        "escape-absolute": str(ecg_dir / FOREIGN),
        "escape-symlink": str(tmp_path / "link"),
    }
    os.symlink(ecg_dir / (FOREIGN + ".hea"), tmp_path / "link.hea")
    signals = {ecg_id: _synthetic(i) for i, ecg_id in enumerate(sources)}
    with kept_server.client() as c:
        summary = c.ingest(IngestItem(ecg_id, signals[ecg_id], 500.0, LEADS, source=src)
                           for ecg_id, src in sources.items())
        assert summary.stored == 3 and summary.failed == 0
        from_file = c.explain(signal=foreign.signal, fs=foreign.fs, lead_names=foreign.lead_names).saliency
        for ecg_id in sources:
            served = c.explain(ecg_id).saliency
            sent = c.explain(signal=signals[ecg_id], fs=500.0, lead_names=LEADS).saliency
            np.testing.assert_allclose(served, sent, atol=1e-5)  # the stored samples, bit for bit in effect
            assert not np.allclose(served, from_file, atol=1e-3)  # not the file the source names


def test_without_copies_only_files_inside_a_data_root_are_read(rooted_server, data_root):
    root, outside = data_root
    inside = np.load(root / "inside.npz")
    items = {
        "inside": str(root / "inside.npz"),             # allowed: resolves inside the root
        "inside-relative": "inside.npz",                # allowed: relative to the root
        "escape-relative": "../" + outside.name + "/foreign.npz",
        "escape-absolute": str(outside / "foreign.npz"),  # exists, outside every root
        "escape-symlink": str(root / "link.npz"),       # inside as written, outside once resolved
        "missing-inside": str(root / "no-such.npz"),
        "system-file": "/etc/passwd",
        "no-source": "",
    }
    with rooted_server.client() as c:
        summary = c.ingest(IngestItem(ecg_id, _synthetic(i), 500.0, LEADS, source=src)
                           for i, (ecg_id, src) in enumerate(items.items()))
        assert summary.stored == len(items)
        direct = c.explain(signal=inside["signal"], fs=float(inside["fs"]), lead_names=list(inside["lead_names"]))
        for ecg_id in ("inside", "inside-relative"):
            np.testing.assert_allclose(c.explain(ecg_id).saliency, direct.saliency, atol=1e-5)
        refusals = set()
        for ecg_id in items:
            if ecg_id.startswith("inside"):
                continue
            with pytest.raises(grpc.RpcError) as err:
                c.explain(ecg_id)
            refusals.add((err.value.code(), err.value.details().replace(repr(ecg_id), "ID")))
    # one status and one message whatever exists on the disk: nothing to learn about paths
    assert len(refusals) == 1, refusals
    code, message = refusals.pop()
    assert code == grpc.StatusCode.FAILED_PRECONDITION and SIGNAL_UNAVAILABLE in message
    assert str(root) not in message and "passwd" not in message


# ---- 2. per-item errors, always a summary --------------------------------------------------------

def test_one_item_with_bad_metadata_is_reported_and_the_other_64_are_stored(kept_server, ecg_dir):
    items = []
    for row in csv.DictReader(open(ecg_dir / "manifest.csv")):
        recording = read_ecg(ecg_dir / row["record"])
        try:
            prepare(recording)
        except InvalidECGError:
            continue  # the corpus's few refused records are not what this test is about
        items.append(IngestItem.from_recording(f"meta/{row['record']}", recording,
                                               metadata={"visit_number": len(items)}))
        if len(items) == 64:
            break
    # text where the column (made by the items before it) holds numbers; last, alone in its batch
    items.append(IngestItem("meta/bad", _synthetic(99), 500.0, LEADS, metadata={"visit_number": "second"}))
    with kept_server.client() as c:
        summary = c.ingest(items)
        assert (summary.received, summary.stored, summary.failed) == (65, 64, 1)
        [error] = summary.errors
        assert (error.index, error.ecg_id, error.code, error.reason) == (64, "meta/bad", "INVALID_ARGUMENT",
                                                                         "bad_metadata")
        assert "visit_number" in error.message
        stored, missing = c.get([item.ecg_id for item in items])
        assert missing == ["meta/bad"] and len(stored) == 64


def test_duplicate_ids_in_a_stream_are_item_errors(kept_server):
    with kept_server.client() as c:
        summary = c.ingest([IngestItem("dup/a", _synthetic(1), 500.0, LEADS),
                            IngestItem("dup/a", _synthetic(2), 500.0, LEADS)])
    assert summary.stored == 1 and [e.reason for e in summary.errors] == ["duplicate_id"]


# ---- 3. implausible signals are refused ------------------------------------------------------------

def test_random_bytes_and_absurd_scales_are_refused_not_stored(kept_server):
    rng = np.random.default_rng(7)
    random_floats = np.frombuffer(rng.bytes(12 * 5000 * 4), dtype="<f4").reshape(12, 5000).copy()
    huge = _synthetic(3) * np.float32(1e30)
    infinite = _synthetic(4)
    infinite[2, 100] = np.inf
    with kept_server.client() as c:
        summary = c.ingest([IngestItem("junk/random", random_floats, 500.0, LEADS),
                            IngestItem("junk/huge", huge, 500.0, LEADS),
                            IngestItem("junk/inf", infinite, 500.0, LEADS),
                            IngestItem("junk/fine", _synthetic(5), 500.0, LEADS)])
        assert summary.stored == 1
        assert {e.ecg_id: e.reason for e in summary.errors} == {
            "junk/random": "implausible_amplitude", "junk/huge": "implausible_amplitude",
            "junk/inf": "implausible_amplitude"}
        assert c.get(["junk/random", "junk/huge", "junk/inf"])[1] == ["junk/random", "junk/huge", "junk/inf"]
        with pytest.raises(grpc.RpcError) as err:
            c.embed(huge, 500.0, LEADS)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "implausible amplitude" in err.value.details()


# ---- 6. malformed requests, pathological filters, k, reflection -------------------------------------

def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:  # a length-delimited field
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _nested_filter(depth: int) -> bytes:
    node = b""
    for _ in range(depth):
        node = _field(2, _field(1, node))  # Filter.all = FilterList(parts=[node])
    return node


def _raw_search(server, payload: bytes, token: str = READ_TOKEN):
    channel = grpc.insecure_channel(server.address)
    try:
        call = channel.unary_unary("/ecg_atlas.v1.Atlas/Search")  # bytes in, bytes out
        return call(payload, timeout=30, metadata=[("authorization", f"Bearer {token}")])
    finally:
        channel.close()


@pytest.mark.parametrize("payload", [
    b"\xff\xff\xff\xff\x0f garbage",
    _field(1, b"x") + _field(5, _nested_filter(5000)),   # far deeper than protobuf parses
    _field(1, b"x") + _field(5, _nested_filter(60)),     # parses, deeper than filters may nest
], ids=["garbage", "filter-5000-deep", "filter-60-deep"])
def test_malformed_requests_are_invalid_argument_without_a_traceback(kept_server, payload):
    with pytest.raises(grpc.RpcError) as err:
        _raw_search(kept_server, payload)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert "Traceback" not in kept_server.log()


@pytest.mark.parametrize("k", [0, 1001])
def test_k_outside_1_to_max_k_is_refused(kept_server, k):
    with kept_server.client() as c:
        with pytest.raises(grpc.RpcError) as err:
            c.search(vector=np.ones(64, np.float32), k=k)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "1 to 1000" in err.value.details()


def test_k_not_set_means_ten(kept_server):
    with kept_server.client() as c:
        c.ingest(IngestItem(f"k/{i}", _synthetic(200 + i), 500.0, LEADS) for i in range(12))
    request = pb.SearchRequest(vector=pb.Vector(values=[1.0] * 64))
    response = pb.SearchResponse.FromString(_raw_search(kept_server, request.SerializeToString()))
    assert len(response.hits) == 10


def test_reflection_answers_v1_and_v1alpha(kept_server):
    request = reflection_pb2.ServerReflectionRequest(list_services="").SerializeToString()
    channel = grpc.insecure_channel(kept_server.address)
    try:
        for package in ("grpc.reflection.v1", "grpc.reflection.v1alpha"):
            call = channel.stream_stream(f"/{package}.ServerReflection/ServerReflectionInfo")
            [answer] = list(call(iter([request]), timeout=30, metadata=[("authorization", f"Bearer {WRITE_TOKEN}")]))
            names = {s.name for s in reflection_pb2.ServerReflectionResponse.FromString(answer)
                     .list_services_response.service}
            assert {"ecg_atlas.v1.Atlas", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} <= names
    finally:
        channel.close()


# ---- 5. the schema is bounded: metadata keys per ECG, columns per store ----------------------------

def test_an_item_with_300_new_metadata_keys_is_refused_and_adds_no_column(kept_server):
    keys = {f"flood_{i}": i for i in range(300)}
    with kept_server.client() as c:
        before = c.info()["columns"]
        summary = c.ingest([IngestItem("keys/flood", _synthetic(301), 500.0, LEADS, metadata=keys),
                            IngestItem("keys/fine", _synthetic(302), 500.0, LEADS, metadata={"flood_ok": 1})])
        assert (summary.stored, summary.failed) == (1, 1)
        [error] = summary.errors
        assert (error.ecg_id, error.code, error.reason) == ("keys/flood", "INVALID_ARGUMENT", "too_many_metadata_keys")
        assert dict(error.details) == {"keys": "300", "max_keys": "64"} and "64" in error.message
        columns = c.info()["columns"]
        assert set(columns) - set(before) == {"flood_ok"}  # nothing of the refused item's 300 keys
        with pytest.raises(grpc.RpcError) as refused:
            c.update_metadata({"keys/fine": {f"flood_{i}": i for i in range(65)}})
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error_info(refused.value) == ("too_many_metadata_keys", {"keys": "65", "max_keys": "64"})
        assert c.info()["columns"] == columns


def test_a_store_at_its_column_limit_refuses_new_keys_until_their_ecgs_are_deleted(tmp_path, tiny_checkpoint):
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs", "--max-metadata-columns", "8")
    try:
        with server.client() as c:
            def ingest(ecg_id: str, keys: list[str], seed: int):
                return c.ingest([IngestItem(ecg_id, _synthetic(seed), 500.0, LEADS,
                                            metadata={k: seed for k in keys})])

            assert ingest("cols/a", [f"a{i}" for i in range(6)], 1).stored == 1
            summary = ingest("cols/b", ["b0", "b1", "b2"], 2)  # 6 + 3 > 8
            assert summary.stored == 0
            [error] = summary.errors
            assert error.reason == "too_many_columns"
            assert dict(error.details) == {"columns": "6", "new_columns": "3", "max_columns": "8"}
            assert ingest("cols/c", ["c0", "c1"], 3).stored == 1  # exactly at the limit
            user = {k for k in c.info()["columns"] if k[0] in "abc" and k[1:].isdigit()}
            assert user == {"a0", "a1", "a2", "a3", "a4", "a5", "c0", "c1"}
            with pytest.raises(grpc.RpcError) as refused:
                c.update_metadata({"cols/c": {"d0": 1}})
            assert error_info(refused.value)[0] == "too_many_columns"

            # The ECG that made a0..a5 is deleted: its columns hold no value and make room.
            assert c.delete(["cols/a"]) == 1
            assert ingest("cols/b", ["b0", "b1", "b2"], 2).stored == 1
            user = {k for k in c.info()["columns"] if k[0] in "abc" and k[1:].isdigit()}
            assert user == {"b0", "b1", "b2", "c0", "c1"}
            [row], _ = c.get(["cols/c"])
            assert row.metadata["c0"] == 3  # the columns still in use keep their values
    finally:
        server.stop()


# ---- 6. what the servers logged (this module's last test: after every request above) ----------------

def test_no_log_line_above_debug_names_a_server_path(kept_server, rooted_server, tmp_path_factory, ecg_dir):
    """Both servers ran at -vv; their records above DEBUG (and anything else on stderr) name no
    store, data root or client-named path: the file names and paths hostile requests sent are
    logged at DEBUG only."""
    base, shared = str(tmp_path_factory.getbasetemp()), str(ecg_dir)
    for server in (kept_server, rooted_server):
        lines = server.lines_above_debug()
        assert " DEBUG " in server.log() and any(" INFO " in line for line in lines)
        leaked = [line for line in lines if base in line or shared in line]
        assert not leaked, leaked[:3]
