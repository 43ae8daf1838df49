"""Python client: the service's verbs with NumPy in and out.

    from ecg_atlas.client import Client
    with Client("127.0.0.1:50051", token="...") as atlas:
        result = atlas.embed(signal, fs=500, lead_names=leads)          # signal: (leads, samples)
        summary = atlas.ingest(IngestItem(ecg_id, signal, fs, leads, metadata=...) for ...)
        hits = atlas.search(ecg_id="ptbxl/HR00001", k=5, where="age>=60")

Ingest streams: items are pulled from your iterable only as fast as the server takes them
(gRPC flow control plus the server's in-flight limit), so a generator that reads files lazily
never buffers the whole data set.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from ecg_atlas import wire
from ecg_atlas.index.filters import Filter, parse_filter
from ecg_atlas.limits import DEFAULT_K, DEFAULT_SUGGESTED_IDS, MAX_MESSAGE_BYTES
from ecg_atlas.v1 import atlas_pb2 as pb
from ecg_atlas.v1 import atlas_pb2_grpc as pb_grpc


@dataclass
class IngestItem:
    ecg_id: str
    signal: np.ndarray  # (leads, samples)
    fs: float
    lead_names: Sequence[str]
    patient_id: str | None = None
    metadata: Mapping[str, object] = field(default_factory=dict)
    replace: bool = False
    source: str | None = None  # path or URI of the signal, stored for later plotting
    gain: float | None = None  # with an int16 signal: digital units per mV; it travels as int16 (half the bytes)
    baseline: int = 0  # with gain: the digital value of 0 mV

    @classmethod
    def from_recording(cls, ecg_id: str, recording, **fields) -> IngestItem:
        """An item for a read ``Recording``: its int16 samples and gain when the reader kept them
        (half the bytes on the wire), else its float32 signal. ``fields``: patient_id, metadata, ..."""
        digital = recording.digital
        if digital is None:
            return cls(ecg_id, recording.signal, recording.fs, recording.lead_names, **fields)
        return cls(ecg_id, digital.samples, recording.fs, recording.lead_names, gain=digital.gain,
                   baseline=digital.baseline, **fields)


@dataclass
class Embedding:
    record_vector: np.ndarray
    segment_vectors: np.ndarray | None
    report: dict
    timing: dict


@dataclass
class StoredECG:
    ecg_id: str
    patient_id: str | None
    metadata: dict
    record_vector: np.ndarray | None = None
    segment_vectors: np.ndarray | None = None


@dataclass
class SearchHit:
    ecg_id: str
    score: float
    patient_id: str | None
    metadata: dict
    record_vector: np.ndarray | None = None


@dataclass
class SearchResult:
    hits: list[SearchHit]
    query_vector: np.ndarray | None
    timing: dict


def timing_dict(timing: pb.Timing) -> dict:
    return {f.name: round(getattr(timing, f.name), 3) for f in pb.Timing.DESCRIPTOR.fields}


def _stored(message: pb.StoredECG) -> StoredECG:
    return StoredECG(
        ecg_id=message.ecg_id, patient_id=message.patient_id or None,
        metadata=wire.metadata_from_proto(message.metadata),
        record_vector=wire.vector_from_proto(message.record_vector) if message.HasField("record_vector") else None,
        segment_vectors=(wire.matrix_from_proto(message.segment_vectors)
                         if message.HasField("segment_vectors") else None))


@dataclass
class ProbeReport:
    """What TrainProbe measured: per-label and macro AUROC / AUPRC, each {value, ci_low, ci_high, ...}."""

    name: str
    kind: str
    labels: list[dict]
    macro_auroc: dict
    macro_auprc: dict
    macro_labels: list[str]
    n_ecgs: int
    n_patients: int
    split: str
    report: dict  # the full report (fraction curve, folds, ...)
    timing: dict


@dataclass
class Prediction:
    labels: list[str]
    keys: list[str]  # stored ecg_ids, then "ecg:<i>" for sent ECGs
    probabilities: np.ndarray  # (len(keys), len(labels))
    timing: dict


@dataclass
class ClusterResult:
    run: str
    n_clusters: int
    noise: int
    cluster_sizes: dict[int, int]  # label -> ECGs (noise under -1)
    n_ecgs: int
    columns: list[str]
    figures: dict[str, bytes]  # name -> PNG (map_cluster, map_<column>, exemplars, outliers)
    enrichment_csv: str
    enrichment_markdown: str
    run_json: str
    timing: dict


@dataclass
class Explanation:
    saliency: np.ndarray  # (T,) in [0, 1]
    segment_saliency: np.ndarray  # (n_segments, T)
    png: bytes | None
    model_id: str
    timing: dict


def _filter(where) -> pb.Filter | None:
    if where is None or where == [] or where == "":
        return None
    tree = parse_filter(where) if isinstance(where, (str, list, tuple)) else where
    return wire.filter_to_proto(tree)


#: ``timeout=NO_DEADLINE``: a call that may run as long as it needs (a probe with its baseline, a
#: cluster run); ``timeout=None`` means the client's default deadline.
NO_DEADLINE = math.inf


def _stream_deadline(timeout: float | None) -> float | None:
    """A streaming call's deadline: none unless a finite ``timeout`` is given."""
    return None if timeout is None or timeout == NO_DEADLINE else timeout


class Client:
    """A connection to an ECG Atlas server. ``target`` is ``host:port``.

    token: bearer token (read or write role). tls_ca: PEM file of the CA that signed the server
    certificate (turns TLS on); client_cert / client_key: PEM files when the server asks for a
    client certificate. timeout: default deadline in seconds for unary calls (None: no deadline).
    """

    def __init__(self, target: str, *, token: str | None = None, tls_ca: str | Path | None = None,
                 client_cert: str | Path | None = None, client_key: str | Path | None = None,
                 timeout: float | None = 60.0, max_message_bytes: int = MAX_MESSAGE_BYTES,
                 server_name: str | None = None):
        options = [("grpc.max_receive_message_length", max_message_bytes),
                   ("grpc.max_send_message_length", max_message_bytes)]
        if server_name:
            options.append(("grpc.ssl_target_name_override", server_name))
        if tls_ca is not None:
            credentials = grpc.ssl_channel_credentials(
                root_certificates=Path(tls_ca).read_bytes(),
                private_key=Path(client_key).read_bytes() if client_key else None,
                certificate_chain=Path(client_cert).read_bytes() if client_cert else None)
            self.channel = grpc.secure_channel(target, credentials, options=options)
        else:
            self.channel = grpc.insecure_channel(target, options=options)
        self.stub = pb_grpc.AtlasStub(self.channel)
        self.timeout = timeout
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Block until the server's health check says SERVING (model loaded and warm)."""
        import time

        from grpc_health.v1 import health_pb2, health_pb2_grpc

        stub = health_pb2_grpc.HealthStub(self.channel)
        give_up = time.monotonic() + timeout
        while True:
            try:
                status = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > give_up:
                raise TimeoutError("the server did not report SERVING in time")
            time.sleep(0.1)

    def _call(self, method, request, timeout):
        """A unary call: ``timeout`` None takes the client's default deadline, ``NO_DEADLINE`` none."""
        deadline = self.timeout if timeout is None else timeout
        return method(request, timeout=None if deadline == NO_DEADLINE else deadline, metadata=self._metadata)

    # -- verbs ----------------------------------------------------------------------------------
    def embed(self, signal, fs: float, lead_names: Sequence[str], *, segment_vectors: bool = False,
              timeout: float | None = None) -> Embedding:
        response = self._call(self.stub.Embed, pb.EmbedRequest(
            ecg=wire.ecg_to_proto(signal, fs, lead_names), include_segment_vectors=segment_vectors), timeout)
        from google.protobuf.json_format import MessageToDict

        return Embedding(
            record_vector=wire.vector_from_proto(response.record_vector),
            segment_vectors=wire.matrix_from_proto(response.segment_vectors) if segment_vectors else None,
            report=MessageToDict(response.report, preserving_proto_field_name=True),
            timing=timing_dict(response.timing))

    def ingest(self, items: Iterable[IngestItem | pb.IngestRequest], *,
               timeout: float | None = None) -> pb.IngestResponse:
        """Stream items to the server; returns the summary (counts, per-item errors, timing).

        Every ECG the summary counts as stored is durable. Items may be ``IngestItem`` or ready
        ``IngestRequest`` messages. ``timeout`` bounds the whole stream (default: none).
        """
        def requests():
            for item in items:
                yield item if isinstance(item, pb.IngestRequest) else ingest_request(item)

        return self.stub.Ingest(requests(), timeout=_stream_deadline(timeout), metadata=self._metadata)

    def search(self, *, ecg_id: str | None = None, signal=None, fs: float | None = None,
               lead_names: Sequence[str] | None = None, vector=None, k: int = DEFAULT_K,
               where: str | Sequence[str] | Filter | None = None, exclude_same_patient: bool = False,
               patient_id: str | None = None, exclude_self: bool = False, include_vectors: bool = False,
               timeout: float | None = None) -> SearchResult:
        """Nearest stored ECGs to a stored id, an ECG (signal + fs + lead_names) or a vector.

        where: filter text such as ``"age>=60 and sex=F"`` (parsed here into a structured filter;
        no SQL travels) or a filter tree.
        """
        request = pb.SearchRequest(k=k, exclude_same_patient=exclude_same_patient, patient_id=patient_id or "",
                                   exclude_self=exclude_self, include_vectors=include_vectors)
        given = [x is not None for x in (ecg_id, signal, vector)]
        if sum(given) != 1:
            raise ValueError("search needs exactly one of ecg_id, signal or vector")
        if ecg_id is not None:
            request.ecg_id = ecg_id
        elif signal is not None:
            request.ecg.CopyFrom(wire.ecg_to_proto(signal, fs, lead_names))
        else:
            request.vector.CopyFrom(wire.vector_to_proto(vector))
        if where is not None and where != []:
            tree = parse_filter(where) if isinstance(where, (str, list, tuple)) else where
            request.filter.CopyFrom(wire.filter_to_proto(tree))
        response = self._call(self.stub.Search, request, timeout)
        hits = []
        for hit in response.hits:
            stored = _stored(hit.ecg)
            hits.append(SearchHit(stored.ecg_id, float(hit.score), stored.patient_id, stored.metadata,
                                  stored.record_vector))
        query = wire.vector_from_proto(response.query_vector) if response.HasField("query_vector") else None
        return SearchResult(hits, query, timing_dict(response.timing))

    def get(self, ecg_ids: Sequence[str], *, vectors: bool = False, segment_vectors: bool = False,
            timeout: float | None = None) -> tuple[list[StoredECG], list[str]]:
        """(stored ECGs in request order, ids that are not stored)."""
        response = self._call(self.stub.Get, pb.GetRequest(
            ecg_ids=list(ecg_ids), include_vectors=vectors, include_segment_vectors=segment_vectors), timeout)
        return [_stored(e) for e in response.ecgs], list(response.missing_ids)

    def get_signal(self, ecg_id: str, *, timeout: float | None = None):
        """A stored ECG's samples as an ``embedder.Recording`` (as ingested), for drawing it."""
        r = self._call(self.stub.GetSignal, pb.GetSignalRequest(ecg_id=ecg_id), timeout)
        return wire.ecg_from_proto(r.ecg)

    def delete(self, ecg_ids: Sequence[str] = (), *, patient_id: str | None = None,
               timeout: float | None = None) -> int:
        response = self._call(self.stub.Delete, pb.DeleteRequest(ecg_ids=list(ecg_ids), patient_id=patient_id or ""),
                              timeout)
        return response.deleted

    def import_shards(self, shards: Sequence[str], *, timeout: float | None = None) -> dict[str, int]:
        """Bulk-load embedding shards lying under the server's data roots (names relative to a
        root, or absolute inside one); returns inserted / skipped_existing / refused / files, and
        refusals: refused rows per reason code."""
        response = self._call(self.stub.Import, pb.ImportRequest(shards=[str(s) for s in shards]), timeout)
        return {"inserted": response.inserted, "skipped_existing": response.skipped_existing,
                "refused": response.refused, "files": response.files, "refusals": dict(response.refusals)}

    def update_metadata(self, updates: Mapping[str, Mapping[str, object]], *, timeout: float | None = None) -> int:
        """updates: ecg_id -> {key: value}; None clears a key."""
        request = pb.UpdateMetadataRequest()
        for ecg_id, metadata in updates.items():
            wire.metadata_to_proto(request.updates.add(ecg_id=ecg_id).metadata, metadata)
        return self._call(self.stub.UpdateMetadata, request, timeout).updated

    def info(self, *, timeout: float | None = None) -> dict:
        """The server's Info as a dict; ``finetuned`` (None, or a served fine-tuned model's metadata:
        name, base, task, labels, data_digest, recipe, metrics) is read out of its contract."""
        import json

        from google.protobuf.json_format import MessageToDict

        response = self._call(self.stub.Info, pb.InfoRequest(), timeout)
        out = MessageToDict(response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        contract = json.loads(response.encoder_contract_json) if response.encoder_contract_json else {}
        out["finetuned"] = contract.get("finetuned")
        return out

    # -- analysis verbs -------------------------------------------------------------------------
    def train_probe(self, name: str, targets: str | Sequence[str], *, where=None, split: str = "patient",
                    fractions: Sequence[float] | None = None, balanced: bool = False, n_bootstrap: int = 1000,
                    seed: int = 0, min_positives: int = 0, overwrite: bool = False, baseline: bool = False,
                    timeout: float | None = None) -> ProbeReport:
        """Train and keep probe `name` on target spec(s) (``label_groups:AF_AFL``, ``sex=F``, ...)
        over the cohort `where` selects; needs a write token."""
        import json

        request = pb.TrainProbeRequest(
            name=name, targets=[targets] if isinstance(targets, str) else list(targets), split=split,
            split_fractions=list(fractions or ()), balanced_class_weight=balanced, n_bootstrap=n_bootstrap,
            seed=seed, min_positives=min_positives, overwrite=overwrite, baseline=baseline)
        tree = _filter(where)
        if tree is not None:
            request.filter.CopyFrom(tree)
        r = self._call(self.stub.TrainProbe, request, timeout)
        labels = [{"label": m.label, "train_positive": m.train_positive, "train_negative": m.train_negative,
                   "test_positive": m.test_positive, "test_negative": m.test_negative,
                   "auroc": wire.estimate_from_proto(m.auroc), "auprc": wire.estimate_from_proto(m.auprc),
                   "C": m.c, "flag": m.flag or None} for m in r.labels]
        return ProbeReport(r.name, r.kind, labels, wire.estimate_from_proto(r.macro_auroc),
                           wire.estimate_from_proto(r.macro_auprc), list(r.macro_labels), r.n_ecgs, r.n_patients,
                           r.split, json.loads(r.report_json) if r.report_json else {}, timing_dict(r.timing))

    def predict(self, probe: str, ecg_ids: Sequence[str] = (), *, signals: Sequence = (), fs: float | None = None,
                lead_names: Sequence[str] | None = None, timeout: float | None = None) -> Prediction:
        """Probabilities of probe `probe` (or ``head``, alias ``ecgfm-head``: the served encoder's own
        fine-tuned head) for stored ids and/or signals ((leads, samples) arrays sharing `fs` and
        `lead_names`)."""
        request = pb.PredictRequest(probe=probe, ecg_ids=list(ecg_ids))
        for signal in signals:
            request.ecgs.append(wire.ecg_to_proto(signal, fs, lead_names))
        r = self._call(self.stub.Predict, request, timeout)
        return Prediction(list(r.labels), list(r.keys), wire.matrix_from_proto(r.probabilities), timing_dict(r.timing))

    def list_probes(self, *, timeout: float | None = None) -> list[dict]:
        """Kept probes: name, kind, labels, model_id, created_at, macro_auroc, where, report. A served
        fine-tuned model comes first as ``head`` of kind "fine-tuned" (its report: the metrics saved with
        it, "test" the test or else the validation metrics, and its metadata under "finetuned")."""
        import json

        r = self._call(self.stub.ListProbes, pb.ListProbesRequest(), timeout)
        return [{"name": p.name, "kind": p.kind, "labels": list(p.labels), "model_id": p.model_id,
                 "created_at": p.created_at, "macro_auroc": p.macro_auroc, "where": list(p.where),
                 "report": json.loads(p.report_json) if p.report_json else {}} for p in r.probes]

    def evaluate_probe(self, name: str, *, where=None, n_bootstrap: int = 1000, seed: int = 0,
                       timeout: float | None = None) -> dict:
        """A kept probe's AUROC / AUPRC on a cohort, leaving out the patients it was trained on."""
        request = pb.EvaluateProbeRequest(name=name, n_bootstrap=n_bootstrap, seed=seed)
        tree = _filter(where)
        if tree is not None:
            request.filter.CopyFrom(tree)
        r = self._call(self.stub.EvaluateProbe, request, timeout)
        return {"name": r.name, "n_ecgs": r.n_ecgs, "n_left_out": r.n_left_out,
                "macro_auroc": wire.estimate_from_proto(r.macro_auroc),
                "macro_auprc": wire.estimate_from_proto(r.macro_auprc), "macro_labels": list(r.macro_labels),
                "labels": [{"label": m.label, "n_positive": m.test_positive, "n_negative": m.test_negative,
                            "auroc": wire.estimate_from_proto(m.auroc), "auprc": wire.estimate_from_proto(m.auprc)}
                           for m in r.labels], "timing": timing_dict(r.timing)}

    def export(self, *, where=None, columns: Sequence[str] = (), vectors: bool = True,
               timeout: float | None = None):
        """Stored ECGs as pyarrow RecordBatches (ecg_id, metadata, record_vector), in ingest order."""
        import pyarrow as pa

        request = pb.ExportRequest(columns=list(columns), include_vectors=vectors)
        tree = _filter(where)
        if tree is not None:
            request.filter.CopyFrom(tree)
        for message in self.stub.Export(request, timeout=_stream_deadline(timeout), metadata=self._metadata):
            yield from pa.ipc.open_stream(message.arrow_ipc)

    def suggest_ids(self, prefix: str = "", *, limit: int = DEFAULT_SUGGESTED_IDS,
                    timeout: float | None = None) -> list[str]:
        """Stored ecg_ids starting with ``prefix``, sorted, at most ``limit`` (1 to
        ``limits.MAX_SUGGESTED_IDS``, 200)."""
        return list(self._call(self.stub.SuggestIds, pb.SuggestIdsRequest(prefix=prefix, limit=limit),
                               timeout).ecg_ids)

    def list_cluster_runs(self, *, timeout: float | None = None) -> list[dict]:
        r = self._call(self.stub.ListClusterRuns, pb.ListClusterRunsRequest(), timeout)
        return [{"run": x.run, "n_ecgs": x.n_ecgs, "n_clusters": x.n_clusters, "created_at": x.created_at,
                 "where": list(x.where)} for x in r.runs]

    def cluster_run(self, run: str, *, timeout: float | None = None) -> dict:
        """A kept cluster run: {"assignments": pyarrow.Table (ecg_id, cluster, probability,
        outlier_score, map_x, map_y), "enrichment_csv": str, "record": dict}."""
        import json

        import pyarrow as pa

        r = self._call(self.stub.GetClusterRun, pb.GetClusterRunRequest(run=run), timeout)
        return {"assignments": pa.ipc.open_stream(r.assignments_arrow).read_all(),
                "enrichment_csv": r.enrichment_csv, "record": json.loads(r.run_json)}

    def cluster_stream(self, run: str, *, where=None, label_columns: Sequence[str] = (),
                       colour_by: Sequence[str] = (), n_epochs: int = 0, min_cluster_size: int = 0,
                       min_samples: int = 0, n_neighbors: int = 0, pca_dims: int = 0, seed: int = 0,
                       exemplar_grid: bool = False, cluster_dims: int = 0, n_exemplars: int = 0,
                       timeout: float | None = None):
        """Yield ("progress", (stage, percent)) items, then ("result", ClusterResult) last."""
        request = pb.ClusterRequest(run=run, label_columns=list(label_columns), colour_by=list(colour_by),
                                    n_epochs=n_epochs, min_cluster_size=min_cluster_size, min_samples=min_samples,
                                    n_neighbors=n_neighbors, pca_dims=pca_dims, seed=seed,
                                    exemplar_grid=exemplar_grid, cluster_dims=cluster_dims,
                                    n_exemplars=n_exemplars)
        tree = _filter(where)
        if tree is not None:
            request.filter.CopyFrom(tree)
        for update in self.stub.Cluster(request, timeout=_stream_deadline(timeout), metadata=self._metadata):
            if update.HasField("progress"):
                yield "progress", (update.progress.stage, update.progress.percent)
            elif update.HasField("result"):
                r = update.result
                yield "result", ClusterResult(
                    r.run, r.n_clusters, r.noise, {int(k): int(v) for k, v in r.cluster_sizes.items()}, r.n_ecgs,
                    list(r.columns), dict(r.figures), r.enrichment_csv, r.enrichment_markdown, r.run_json,
                    timing_dict(r.timing))

    def cluster(self, run: str, *, progress=None, **kwargs) -> ClusterResult:
        """Cluster a cohort (see ``cluster_stream`` for the options); ``progress(stage, percent)``
        is called for each progress message. Needs a write token; no deadline unless ``timeout``."""
        result = None
        for kind, value in self.cluster_stream(run, **kwargs):
            if kind == "progress":
                if progress is not None:
                    progress(*value)
            else:
                result = value
        if result is None:
            raise RuntimeError("the Cluster stream ended without a result")
        return result

    def explain(self, ecg_id: str | None = None, *, signal=None, fs: float | None = None,
                lead_names: Sequence[str] | None = None, png: bool = False, lead: str = "II",
                single_lead: bool = False, timeout: float | None = None) -> Explanation:
        """Attention saliency of a stored ECG (by id) or of a signal; ``png`` also draws it."""
        if (ecg_id is None) == (signal is None):
            raise ValueError("explain needs exactly one of ecg_id or signal")
        request = pb.ExplainRequest(include_png=png, lead=lead, single_lead=single_lead)
        if ecg_id is not None:
            request.ecg_id = ecg_id
        else:
            request.ecg.CopyFrom(wire.ecg_to_proto(signal, fs, lead_names))
        r = self._call(self.stub.Explain, request, timeout)
        return Explanation(wire.vector_from_proto(r.saliency), wire.matrix_from_proto(r.segment_saliency),
                           r.png or None, r.model_id, timing_dict(r.timing))


def ingest_request(item: IngestItem) -> pb.IngestRequest:
    request = pb.IngestRequest(ecg_id=item.ecg_id, patient_id=item.patient_id or "",
                               ecg=wire.ecg_to_proto(item.signal, item.fs, item.lead_names, gain=item.gain,
                                                       baseline=item.baseline), replace=item.replace,
                               source=item.source or "")
    wire.metadata_to_proto(request.metadata, item.metadata)
    return request


def error_info(exc) -> tuple[str, dict[str, str]]:
    """(reason, figures) of a failed call, from the google.rpc.ErrorInfo the server attaches
    (``too_short``, {"duration_s": "3.2", "minimum_s": "5"}); ("", {}) when there is none."""
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    status = rpc_status.from_call(exc) if hasattr(exc, "trailing_metadata") else None
    for detail in status.details if status is not None else ():
        info = error_details_pb2.ErrorInfo()
        if detail.Unpack(info):
            return info.reason, dict(info.metadata)
    return "", {}
