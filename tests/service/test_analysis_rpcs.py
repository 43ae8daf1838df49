"""The analysis RPCs (TrainProbe, Predict, Cluster, Explain) against the real session server.

The session store holds the sample corpus ingested with the tiny pretrained checkpoint; a boolean
``age_over_60`` label is added through UpdateMetadata (the analysis tests' target: the tiny
encoder's vectors carry age).
"""

from __future__ import annotations

import csv

import grpc
import numpy as np
import pytest

from ecg_atlas.embedder import read_ecg
from tests.service.conftest import READ_TOKEN

pytestmark = pytest.mark.slow  # a real server with the whole corpus

PROBE = "svc_older"
TARGET = "age_over_60"


def _code(excinfo) -> grpc.StatusCode:
    return excinfo.value.code()


@pytest.fixture(scope="module")
def stored(corpus_server, ecg_dir):
    """Every stored ECG of the corpus (id -> metadata), with age_over_60 set where age is known."""
    with open(ecg_dir / "manifest.csv", newline="") as f:
        ids = [row["record"] for row in csv.DictReader(f)]
    with corpus_server.client() as c:
        found, _ = c.get(ids)
        updates = {e.ecg_id: {TARGET: e.metadata["age"] >= 60} for e in found if e.metadata.get("age") is not None}
        assert c.update_metadata(updates) == len(updates)
    return {e.ecg_id: e.metadata for e in found}


@pytest.fixture(scope="module")
def report(corpus_server, stored):
    with corpus_server.client() as c:
        return c.train_probe(PROBE, TARGET, split="patient", fractions=(0.6, 0.1, 0.3), n_bootstrap=100,
                             overwrite=True, timeout=120)


def test_train_probe_reports_macro_auroc_with_ci(report, stored):
    assert report.name == PROBE and report.kind == "binary"
    assert [m["label"] for m in report.labels] == [TARGET]
    label = report.labels[0]
    assert label["test_positive"] > 0 and label["test_negative"] > 0
    assert label["train_positive"] + label["train_negative"] + label["test_positive"] + label["test_negative"] \
        <= report.n_ecgs
    macro = report.macro_auroc
    assert 0.0 <= macro["ci_low"] <= macro["value"] <= macro["ci_high"] <= 1.0
    assert macro["resamples_used"] > 0 and report.macro_labels == [TARGET]
    assert not np.isnan(report.macro_auprc["value"])
    assert report.n_ecgs == sum(m.get("age") is not None for m in stored.values())
    assert report.report["test"]["macro"]["auroc"]["value"] == pytest.approx(macro["value"], abs=1e-6)
    assert report.timing["total_ms"] > 0


def test_predict_stored_and_sent_ecgs(corpus_server, report, stored, ecg_dir):
    ids = sorted(stored)[:4]
    recording = read_ecg(ecg_dir / ids[0])
    with corpus_server.client(token=READ_TOKEN) as c:
        out = c.predict(PROBE, ids, signals=[recording.signal], fs=recording.fs, lead_names=recording.lead_names)
    assert out.labels == [TARGET]
    assert out.keys == [*ids, "ecg:0"]
    assert out.probabilities.shape == (5, 1)
    assert ((out.probabilities >= 0) & (out.probabilities <= 1)).all()
    # The sent ECG is the stored one: the same vector, so the same probability.
    assert out.probabilities[4, 0] == pytest.approx(out.probabilities[0, 0], abs=1e-4)


def test_predict_unknown_probe_or_id_is_not_found(corpus_server, report, stored):
    with corpus_server.client(token=READ_TOKEN) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.predict("no_such_probe", sorted(stored)[:1])
        assert _code(e) == grpc.StatusCode.NOT_FOUND and "no_such_probe" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            c.predict(PROBE, ["not/stored"])
        assert _code(e) == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as e:  # the tiny checkpoint is pretrained: no classifier head
            c.predict("ecgfm-head", sorted(stored)[:1])
        assert _code(e) == grpc.StatusCode.FAILED_PRECONDITION and "finetuned" in e.value.details()


def test_train_probe_needs_the_write_role(corpus_server, stored):
    with corpus_server.client(token=READ_TOKEN) as c, pytest.raises(grpc.RpcError) as e:
        c.train_probe("svc_denied", TARGET, n_bootstrap=10)
    assert _code(e) == grpc.StatusCode.PERMISSION_DENIED


def test_train_probe_bad_requests_are_invalid_argument(corpus_server, stored):
    with corpus_server.client() as c:
        with pytest.raises(grpc.RpcError) as e:
            c.train_probe("svc_bad", "no_such_column=1", n_bootstrap=10)
        assert _code(e) == grpc.StatusCode.INVALID_ARGUMENT and "no_such_column" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            c.train_probe("svc_bad", "sex:F", n_bootstrap=10)  # ':' is for label-list columns
        assert _code(e) == grpc.StatusCode.INVALID_ARGUMENT and "sex=VALUE" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            c.train_probe("svc_bad", TARGET, where="no_such_column > 3", n_bootstrap=10)
        assert _code(e) == grpc.StatusCode.INVALID_ARGUMENT and "no_such_column" in e.value.details()
        with pytest.raises(grpc.RpcError) as e:
            c.train_probe("Bad Name", TARGET, n_bootstrap=10)
        assert _code(e) == grpc.StatusCode.INVALID_ARGUMENT


def test_cluster_streams_progress_then_result(corpus_server, stored):
    events = []
    with corpus_server.client() as c:
        for kind, value in c.cluster_stream("svc_map", n_epochs=30, timeout=120):
            events.append((kind, value))
        kinds = [k for k, _ in events]
        assert kinds[-1] == "result" and kinds.count("result") == 1
        progress = [v for k, v in events if k == "progress"]
        assert len(progress) >= 1
        assert [p for _, p in progress] == sorted(p for _, p in progress) and progress[-1][1] == pytest.approx(100)
        result = events[-1][1]
        n_stored = int(c.info()["ecg_count"])
        assert result.run == "svc_map" and result.n_ecgs == n_stored
        assert sum(result.cluster_sizes.values()) == n_stored
        assert result.noise == result.cluster_sizes.get(-1, 0)
        assert result.n_clusters == len([k for k in result.cluster_sizes if k >= 0])
        assert result.columns[0] == "cluster_svc_map" and "map_cluster" in result.figures
        assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in result.figures.values())
        assert result.enrichment_csv.splitlines()[0].startswith("cluster") and result.run_json.startswith("{")
        # files travel as bytes: no server path anywhere in the answer
        assert str(corpus_server.store) not in repr(result)
        got, _ = c.get(sorted(stored)[:3])
        assert all(isinstance(e.metadata["cluster_svc_map"], int) for e in got)
        kept = c.cluster_run("svc_map")
        table = kept["assignments"]
        assert table.num_rows == n_stored and set(table.column_names) >= {"ecg_id", "cluster", "map_x", "map_y"}
        assert sorted(set(table.column("cluster").to_pylist())) == sorted(result.cluster_sizes)
        assert kept["enrichment_csv"] == result.enrichment_csv
        assert "svc_map" in [r["run"] for r in c.list_cluster_runs()]
        # The callback form: same run name again (the run is replaced), progress via the callback.
        seen = []
        again = c.cluster("svc_map", n_epochs=30, progress=lambda stage, pct: seen.append(stage), timeout=120)
        assert seen and sum(again.cluster_sizes.values()) == n_stored


def test_cluster_needs_the_write_role(corpus_server, stored):
    with corpus_server.client(token=READ_TOKEN) as c, pytest.raises(grpc.RpcError) as e:
        c.cluster("svc_denied", n_epochs=10)
    assert _code(e) == grpc.StatusCode.PERMISSION_DENIED


def test_explain_stored_id_and_sent_ecg(corpus_server, stored, ecg_dir):
    ecg_id = sorted(stored)[0]
    with corpus_server.client(token=READ_TOKEN) as c:
        out = c.explain(ecg_id, png=True)
        assert out.saliency.shape == (156,) and out.saliency.dtype == np.float32
        assert out.saliency.min() == pytest.approx(0.0) and out.saliency.max() == pytest.approx(1.0)
        assert out.segment_saliency.shape[1] == 156 and out.segment_saliency.shape[0] >= 1
        assert out.png is not None and out.png.startswith(b"\x89PNG\r\n\x1a\n")
        recording = read_ecg(ecg_dir / ecg_id)
        sent = c.explain(signal=recording.signal, fs=recording.fs, lead_names=recording.lead_names)
        assert sent.png is None
        np.testing.assert_allclose(sent.saliency, out.saliency, atol=1e-4)
        with pytest.raises(grpc.RpcError) as e:
            c.explain("not/stored")
        assert _code(e) == grpc.StatusCode.NOT_FOUND
