"""End-to-end: the corpus served by a real `ecg-atlas serve` process, through the client and the CLI."""

from __future__ import annotations

import csv
import json
import os
import re
from pathlib import Path

import grpc
import numpy as np
import pytest

from ecg_atlas.client import IngestItem
from ecg_atlas.embedder import read_ecg
from ecg_atlas.ingest.pseudonym import ENV_KEY
from ecg_atlas.v1 import atlas_pb2 as pb

from .conftest import READ_TOKEN, WRITE_TOKEN, cli, cli_json, start_server

QUERY = "cinc_ptbxl/HR00001"


@pytest.fixture(scope="module")
def manifest(ecg_dir) -> dict[str, dict]:
    with open(ecg_dir / "manifest.csv", newline="") as f:
        return {row["record"]: row for row in csv.DictReader(f)}


@pytest.mark.slow
def test_ingest_stores_every_usable_ecg_and_reports_the_rest(corpus_server, manifest, client):
    ingest = corpus_server.ingest
    assert ingest["found"] == len(manifest) == 367
    assert ingest["stored"] + ingest["failed"] == ingest["found"]
    assert ingest["stored"] > 300
    # ECGs that cannot be embedded are reported one by one with a reason, not as a failed stream
    two_lead = [r for r, row in manifest.items() if row["n_leads"] == "2"]
    assert two_lead and all(ingest["errors"][r].startswith("INVALID_ARGUMENT") for r in two_lead)
    assert "usable standard leads" in ingest["errors"][two_lead[0]]
    info = client.info()
    assert int(info["ecg_count"]) == ingest["stored"] == int(info["index_entries"])


@pytest.mark.slow
def test_search_by_id_returns_the_record_itself_first(client, manifest):
    result = client.search(ecg_id=QUERY, k=5)
    assert result.hits[0].ecg_id == QUERY
    assert result.hits[0].score == pytest.approx(1.0, abs=1e-4)
    assert [h.score for h in result.hits] == sorted((h.score for h in result.hits), reverse=True)
    assert result.hits[0].metadata["age"] == int(manifest[QUERY]["age"])  # manifest metadata came along
    assert result.timing["total_ms"] > 0 and result.timing["search_ms"] > 0
    without_self = client.search(ecg_id=QUERY, k=5, exclude_self=True)
    assert QUERY not in [h.ecg_id for h in without_self.hits]


@pytest.mark.slow
def test_filtered_search_honours_the_filter(client):
    hits = client.search(ecg_id=QUERY, k=20, where="age>=60").hits
    assert len(hits) == 20 and all(h.metadata["age"] >= 60 for h in hits)
    hits = client.search(ecg_id=QUERY, k=50, where=["sex=F", "dataset=cinc_georgia"]).hits
    assert hits and all(h.metadata["sex"] == "F" and h.metadata["dataset"] == "cinc_georgia" for h in hits)
    assert len(hits) < 50  # the filter, not k, limited the answer
    with pytest.raises(grpc.RpcError) as err:
        client.search(ecg_id=QUERY, where="no_such_column=1")
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "no_such_column" in err.value.details()


@pytest.mark.slow
def test_exclude_same_patient(client, manifest):
    by_patient: dict[str, list[str]] = {}
    for record, row in manifest.items():
        if row["patient_id"] and row["is_12lead_std"] == "True" and float(row["duration_s"]) >= 5:
            by_patient.setdefault(row["patient_id"], []).append(record)
    patient, records = max(by_patient.items(), key=lambda kv: len(kv[1]))
    assert len(records) >= 2
    hits = client.search(ecg_id=records[0], k=400, exclude_same_patient=True).hits
    assert not {h.ecg_id for h in hits} & set(records)
    assert all(h.patient_id != patient for h in hits)


@pytest.mark.slow
def test_search_by_ecg_and_by_vector_agree_with_embed(client, ecg_dir):
    recording = read_ecg(ecg_dir / QUERY)
    embedded = client.embed(recording.signal, recording.fs, recording.lead_names, segment_vectors=True)
    assert embedded.segment_vectors.shape == (2, 64)
    np.testing.assert_allclose(embedded.record_vector, embedded.segment_vectors.mean(axis=0), atol=1e-6)
    assert embedded.report["n_segments"] == 2
    assert embedded.timing["inference_ms"] > 0 and embedded.timing["preprocess_ms"] > 0
    by_ecg = client.search(signal=recording.signal, fs=recording.fs, lead_names=recording.lead_names, k=3)
    by_vector = client.search(vector=embedded.record_vector, k=3)
    assert by_ecg.hits[0].ecg_id == by_vector.hits[0].ecg_id == QUERY
    assert by_ecg.hits[0].score == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(grpc.RpcError) as err:
        client.search(vector=np.ones(10, np.float32))
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "64-d" in err.value.details()


@pytest.mark.slow
def test_get_update_metadata_and_filter_on_new_labels(client):
    found, missing = client.get([QUERY, "no/such-ecg"], vectors=True)
    assert [e.ecg_id for e in found] == [QUERY] and missing == ["no/such-ecg"]
    assert found[0].record_vector.shape == (64,)
    assert client.update_metadata({QUERY: {"review": ["confirmed_norm"]}}) == 1
    hits = client.search(ecg_id=QUERY, k=10, where="review contains confirmed_norm").hits
    assert [h.ecg_id for h in hits] == [QUERY]
    with pytest.raises(grpc.RpcError) as err:
        client.update_metadata({"no/such-ecg": {"review": ["x"]}})
    assert err.value.code() == grpc.StatusCode.NOT_FOUND


@pytest.mark.slow
def test_ingest_is_idempotent_and_delete_by_patient_withdraws(client, ecg_dir):
    recording = read_ecg(ecg_dir / "cinc_cpsc2018/A0003")
    items = [IngestItem(f"withdraw/{i}", recording.signal, recording.fs, recording.lead_names,
                        patient_id="withdrawing-patient", metadata={"age": 50 + i}) for i in range(3)]
    first = client.ingest(items)
    assert (first.stored, first.skipped_existing, first.failed) == (3, 0, 0)
    again = client.ingest(items)
    assert (again.stored, again.skipped_existing) == (0, 3)
    assert client.delete(patient_id="withdrawing-patient") == 3
    found, missing = client.get([i.ecg_id for i in items])
    assert not found and len(missing) == 3
    hits = client.search(signal=recording.signal, fs=recording.fs, lead_names=recording.lead_names, k=10).hits
    assert not any(h.ecg_id.startswith("withdraw/") for h in hits)


@pytest.mark.slow
def test_ingest_skips_stored_ids_across_lookup_groups_and_replace_overrides(client, ecg_dir):
    # Ingest asks the store about ids a group at a time; stored, new, replaced and duplicate ids
    # interleaved over several groups must still each be counted once, correctly.
    a3, a4 = read_ecg(ecg_dir / "cinc_cpsc2018/A0003"), read_ecg(ecg_dir / "cinc_cpsc2018/A0004")
    def item(i, rec, **kw):
        return IngestItem(f"groups/{i}", rec.signal, rec.fs, rec.lead_names, patient_id="groups-patient", **kw)
    first = client.ingest([item(i, a3) for i in range(0, 20, 2)])  # the even ids
    assert (first.stored, first.skipped_existing) == (10, 0)
    stream = [item(i, a4, replace=True) if i == 2 else item(i, a3) for i in range(20)] + [item(5, a3)]
    mixed = client.ingest(stream)  # 0-19 over three lookup groups, 2 replaced by another ECG, 5 twice
    assert (mixed.stored, mixed.skipped_existing, mixed.failed) == (11, 9, 1)
    assert [(e.ecg_id, e.code) for e in mixed.errors] == [("groups/5", "INVALID_ARGUMENT")]
    found, _ = client.get(["groups/2", "groups/4"], vectors=True)
    embedded = client.embed(a4.signal, a4.fs, a4.lead_names)
    assert np.allclose(found[0].record_vector, embedded.record_vector, atol=1e-5)  # replaced by A0004
    assert not np.allclose(found[1].record_vector, embedded.record_vector, atol=1e-3)
    assert client.delete(patient_id="groups-patient") == 20


def _ecg(signal, fs=500.0, leads=None, fmt=pb.SAMPLE_FORMAT_FLOAT32_LE, samples=None):
    signal = np.asarray(signal)
    leads = leads or ["I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6"][:signal.shape[0]]
    return pb.ECG(lead_names=leads, sampling_rate_hz=fs, n_leads=signal.shape[0], n_samples=signal.shape[1],
                  sample_format=fmt, samples=signal.astype("<f4").tobytes() if samples is None else samples)


BAD_ECGS = {
    "nan_only": (_ecg(np.full((12, 5000), np.nan)), "usable standard leads"),
    "two_leads": (_ecg(np.random.default_rng(0).standard_normal((2, 5000))), "usable standard leads"),
    "one_second": (_ecg(np.random.default_rng(1).standard_normal((12, 500))), "too short"),
    "fifty_mb": (_ecg(np.zeros((12, 1_050_000), np.float32)), "too long"),
    "garbage_bytes": (_ecg(np.zeros((12, 5000)), samples=b"\x00\xffgarbage" * 7), "bytes"),
    "wrong_dtype": (_ecg(np.zeros((12, 5000)), samples=np.zeros((12, 5000), "<f8").tobytes()), "bytes"),
    "unknown_format": (_ecg(np.zeros((12, 5000)), fmt=pb.SAMPLE_FORMAT_UNSPECIFIED), "sample_format"),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", BAD_ECGS)
def test_bad_ecgs_get_invalid_argument_and_the_server_keeps_serving(client, name):
    ecg, message = BAD_ECGS[name]
    with pytest.raises(grpc.RpcError) as err:
        client.stub.Embed(pb.EmbedRequest(ecg=ecg), metadata=client._metadata, timeout=60)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()
    assert client.search(ecg_id=QUERY, k=1).hits[0].ecg_id == QUERY


@pytest.mark.slow
def test_one_bad_ecg_does_not_fail_the_ingest_stream(client, ecg_dir):
    good = read_ecg(ecg_dir / "cinc_cpsc2018/A0004")
    requests = [pb.IngestRequest(ecg_id="stream/good-1", ecg=_ecg(good.signal, good.fs, good.lead_names)),
                pb.IngestRequest(ecg_id="stream/bad", ecg=BAD_ECGS["garbage_bytes"][0]),
                pb.IngestRequest(ecg_id="stream/good-2", ecg=_ecg(good.signal, good.fs, good.lead_names))]
    summary = client.ingest(requests)
    assert (summary.received, summary.stored, summary.failed) == (3, 2, 1)
    assert summary.errors[0].ecg_id == "stream/bad" and summary.errors[0].index == 1
    assert summary.errors[0].code == "INVALID_ARGUMENT"
    assert summary.timing.total_ms > 0 and summary.timing.inference_ms > 0
    assert client.delete(["stream/good-1", "stream/good-2"]) == 2


@pytest.mark.slow
def test_int16_samples_with_gain_embed_like_float32(client, ecg_dir):
    recording = read_ecg(ecg_dir / "cinc_cpsc2018/A0002")
    digital = np.round(recording.signal * 1000).astype(np.int16)
    as_float = client.embed(digital / np.float32(1000), recording.fs, recording.lead_names).record_vector
    request = pb.EmbedRequest(ecg=pb.ECG(
        lead_names=recording.lead_names, sampling_rate_hz=recording.fs, n_leads=12, n_samples=digital.shape[1],
        sample_format=pb.SAMPLE_FORMAT_INT16_LE, samples=digital.astype("<i2").tobytes(), gain=1000.0))
    as_int16 = client.stub.Embed(request, metadata=client._metadata, timeout=60).record_vector.values
    np.testing.assert_allclose(as_int16, as_float, atol=1e-4)


@pytest.mark.parametrize("record, sample_format", [("cinc_ptbxl/HR00001", pb.SAMPLE_FORMAT_INT16_LE),
                                                    ("cpsc2021/data_101_6", pb.SAMPLE_FORMAT_FLOAT32_LE)])
def test_ingest_items_from_read_recordings_reach_the_server_bit_for_bit(ecg_dir, record, sample_format):
    # One gain for every lead: the int16 samples travel; mixed gains: float32. Either way the
    # server unpacks exactly the float32 signal a local read gives.
    from ecg_atlas import wire
    from ecg_atlas.client import ingest_request

    recording = read_ecg(ecg_dir / record)
    request = ingest_request(IngestItem.from_recording("x", recording, patient_id="p", replace=True))
    assert request.ecg.sample_format == sample_format and (request.patient_id, request.replace) == ("p", True)
    assert np.array_equal(wire.ecg_from_proto(request.ecg).signal, read_ecg(ecg_dir / record).signal)


@pytest.mark.slow
def test_tokens_and_roles(corpus_server):
    with corpus_server.client(token=None) as anonymous:
        with pytest.raises(grpc.RpcError) as err:
            anonymous.info()
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with corpus_server.client(token="not-a-token") as stranger:
        with pytest.raises(grpc.RpcError) as err:
            stranger.search(ecg_id=QUERY)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with corpus_server.client(token=READ_TOKEN) as reader:
        assert reader.search(ecg_id=QUERY, k=1).hits[0].ecg_id == QUERY
        for call in (lambda: reader.delete([QUERY]), lambda: reader.update_metadata({QUERY: {"x": 1}}),
                     lambda: reader.ingest(iter([pb.IngestRequest(ecg_id="x")]))):
            with pytest.raises(grpc.RpcError) as err:
                call()
            assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert reader.get([QUERY])[0]  # the refused delete did nothing


@pytest.mark.slow
def test_health_and_reflection_answer_through_the_standard_clients(corpus_server):
    from google.protobuf.descriptor_pool import DescriptorPool
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

    with grpc.insecure_channel(corpus_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "ecg_atlas.v1.Atlas"):
            status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        database = ProtoReflectionDescriptorDatabase(channel)
        assert "ecg_atlas.v1.Atlas" in database.get_services()
        service = DescriptorPool(database).FindServiceByName("ecg_atlas.v1.Atlas")
        assert {m.name for m in service.methods} >= {"Embed", "Ingest", "Search", "Get", "Delete",
                                                     "UpdateMetadata", "Info"}


@pytest.mark.slow
def test_info_describes_model_store_and_limits(client):
    info = client.info()
    assert info["model_id"] == "ecg-fm-pretrained-2x64" and info["dim"] == 64
    assert len(info["checkpoint_sha256"]) == 64 and info["device"] == "cpu" and info["dtype"] == "float32"
    assert info["index_kind"] == "flat" and info["index_backend"].startswith("faiss")
    assert info["auth_enabled"] is True and info["tls"] is False
    assert info["limits"]["max_batch_segments"] == 8 and int(info["limits"]["max_receive_message_bytes"]) == 64 << 20
    workers, threads = info["limits"]["encoder_workers"], info["limits"]["threads_per_encoder_worker"]
    assert workers == (2 if os.cpu_count() >= 2 else 1) and threads >= 1  # the CPU defaults
    assert workers * threads <= os.cpu_count()  # the workers share the cores, never oversubscribe them
    assert {"torch", "faiss", "duckdb", "grpc", "ecg_atlas"} <= set(info["versions"])
    assert info["columns"]["age"] == "BIGINT" and info["encoder_notice"] == ""
    contract = json.loads(info["encoder_contract_json"])  # the encoder's input contract travels with Info
    assert (contract["name"], contract["fs"], contract["dim"]) == ("ECG-FM", 500, 64)
    assert contract["input_shape"] == [12, 2500] and contract["preprocessing_version"] == "ecgfm-v1"


@pytest.mark.slow
def test_cli_search_get_info_and_plot(corpus_server, tmp_path, ecg_dir):
    conn = ["--server", corpus_server.address, "--token", READ_TOKEN]
    plot = tmp_path / "neighbours.png"
    found = cli_json("search", "--id", QUERY, "-k", "4", "--where", "age>=60", "--where", "sex=F",
                     "--plot", str(plot), *conn)
    assert len(found["hits"]) == 4
    assert all(h["metadata"]["age"] >= 60 and h["metadata"]["sex"] == "F" for h in found["hits"])
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 50_000
    plain = cli_json("search", "--id", QUERY, "-k", "4", "--include-self", "--plot", str(tmp_path / "self.png"),
                     *conn)
    assert plain["hits"][0]["ecg_id"] == QUERY  # its own best match in the list...
    assert plain["plotted_neighbours"] == [h["ecg_id"] for h in plain["hits"][1:]]  # ...but no panel of its own
    by_file = cli_json("search", "--ecg", str(ecg_dir / QUERY) + ".hea", "-k", "1", *conn)
    assert by_file["hits"][0]["ecg_id"] == QUERY
    refused = cli("search", "--ecg", str(ecg_dir / QUERY) + ".hea", "--exclude-same-patient", *conn, check=False)
    assert refused.returncode == 2 and "--patient-id" in refused.stderr
    got = cli_json("get", QUERY, *conn)
    assert got["ecgs"][0]["metadata"]["dataset"] == "cinc_ptbxl" and got["missing_ids"] == []
    assert cli_json("info", *conn)["dim"] == 64
    human = cli("search", "--id", QUERY, "-k", "2", "--include-self", *conn).stdout
    assert QUERY in human and "1.0000" in human
    refused = cli("delete", QUERY, *conn, check=False)
    assert refused.returncode == 2 and "PERMISSION_DENIED" in refused.stderr


@pytest.mark.slow
def test_cli_ingest_resumes_by_skipping_stored_ids(corpus_server, ecg_dir):
    first = corpus_server.ingest
    again = cli_json("ingest", str(ecg_dir), "--server", corpus_server.address, "--token", WRITE_TOKEN)
    assert again["found"] == first["found"] and again["stored"] == 0
    assert again["skipped_existing"] == first["stored"]
    assert set(again["errors"]) == set(first["errors"])  # only what could not be stored is sent again


#: What the hospital exports in ../shared/data/formats say about their patients (formats/manifest.csv):
#: ids, names, physicians. None of it may reach a server log line above DEBUG.
EXPORT_IDENTIFIERS = ("JAX01234", "JAX12345", "TEST 05", "TEST 04", "Doe, John", "Patient^Test", "123-654",
                      "FORD MD^GREGORY", "Test Hospital", "SBJ-123", "Clark", "ZZDEMOPTONLY", "123456789",
                      "test test", "106_ABC", "Investigator, Thomas")
#: Three or more decimal numbers in a row: how an array of samples prints.
NUMBER_RUN = re.compile(r"-?\d+\.\d+(?:[,;\s]+-?\d+\.\d+){2,}")


@pytest.mark.slow
def test_a_vv_server_logs_no_patient_id_name_path_or_signal_above_debug(tmp_path, tiny_checkpoint, shared_data,
                                                                          ecg_dir, manifest):
    """A server at -vv takes what carries patient ids, names, file names and samples: the CLI's
    ingest of a manifest's records and of every hospital export (file patient ids pseudonymised),
    a client's ECG with NaN samples, a patient id and a name, searches, a refused request and a
    patient's withdrawal. It logs records above DEBUG (what an operator reads) and DEBUG records
    (the refused request naming its id); no line above DEBUG names any of it."""
    secret_id, secret_patient, secret_name = "ward-7/bed-3", "patient-4471-private", "Doe^Jane"
    missing_id = "ward-7/bed-4"
    recording = read_ecg(ecg_dir / "cinc_cpsc2018/A0003")
    gappy = recording.signal.copy()
    gappy[0, 1000:1003] = np.nan  # interpolated by the server's preprocessing, which says so at INFO
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs", verbose=2)
    try:
        conn = ("--server", server.address, "--token", WRITE_TOKEN)
        records = cli_json("ingest", str(ecg_dir / "cinc_ptbxl"), "--id-prefix", "cinc_ptbxl/", "--metadata",
                           str(ecg_dir / "manifest.csv"), "--id-column", "record", *conn)
        exports = cli_json("ingest", str(shared_data / "formats"), *conn, env={ENV_KEY: "k" * 32})
        assert records["stored"] == records["found"] > 0 and exports["stored"] > 0
        with server.client() as c:
            sent = IngestItem(secret_id, gappy, recording.fs, recording.lead_names, patient_id=secret_patient,
                              metadata={"name": secret_name})
            assert c.ingest([sent]).stored == 1
            assert c.search(ecg_id=secret_id, k=3).hits[0].ecg_id == secret_id
            with pytest.raises(grpc.RpcError) as refused:
                c.search(ecg_id=missing_id, k=3)
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
            assert c.delete(patient_id=secret_patient) == 1
    finally:
        server.stop()

    log, above_debug = server.log(), server.lines_above_debug()
    assert any(" INFO " in line for line in above_debug), log[-3000:]  # what an operator reads is there...
    debug = [line for line in log.splitlines() if " DEBUG " in line]
    assert any(missing_id in line for line in debug), log[-3000:]  # ...and so is what they read at -vv only
    assert not [line for line in above_debug if " DEBUG " in line]

    ptbxl = [row for record, row in manifest.items() if record.startswith("cinc_ptbxl/")]
    names = {row["record"].split("/")[-1] for row in ptbxl}  # the records' file names, e.g. HR00001
    exports_listed = (shared_data / "formats" / "manifest.csv").read_text().splitlines()[1:]
    names |= {Path(line.split(",")[0]).stem for line in exports_listed}
    secrets = ({secret_id, missing_id, secret_patient, secret_name, str(shared_data), str(tmp_path), "shared/data"}
               | set(EXPORT_IDENTIFIERS) | {row["patient_id"] for row in ptbxl if row["patient_id"]} | names)
    assert missing_id in log  # the check below would see a secret where one is written
    leaked = sorted({secret for secret in secrets for line in above_debug if secret in line})
    assert not leaked, leaked

    samples = {text for text in map(str, np.unique(recording.signal)) if len(text) >= 6}
    assert len(samples) > 100
    assert not [line for line in above_debug if NUMBER_RUN.search(line)]
    assert not sorted({text for text in samples for line in above_debug if text in line})
