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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np

from ecg_atlas import wire
from ecg_atlas.config import MiB
from ecg_atlas.index.filters import Filter, parse_filter
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
        segment_vectors=wire.matrix_from_proto(message.segment_vectors) if message.HasField("segment_vectors") else None)


class Client:
    """A connection to an ECG Atlas server. ``target`` is ``host:port``.

    token: bearer token (read or write role). tls_ca: PEM file of the CA that signed the server
    certificate (turns TLS on); client_cert / client_key: PEM files when the server asks for a
    client certificate. timeout: default deadline in seconds for unary calls (None: no deadline).
    """

    def __init__(self, target: str, *, token: str | None = None, tls_ca: str | Path | None = None,
                 client_cert: str | Path | None = None, client_key: str | Path | None = None,
                 timeout: float | None = 60.0, max_message_bytes: int = 64 * MiB,
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
        return method(request, timeout=self.timeout if timeout is None else timeout, metadata=self._metadata)

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

    def ingest(self, items: Iterable[IngestItem | pb.IngestRequest], *, timeout: float | None = None) -> pb.IngestSummary:
        """Stream items to the server; returns the summary (counts, per-item errors, timing).

        Every ECG the summary counts as stored is durable. Items may be ``IngestItem`` or ready
        ``IngestRequest`` messages. ``timeout`` bounds the whole stream (default: none).
        """
        def requests():
            for item in items:
                yield item if isinstance(item, pb.IngestRequest) else ingest_request(item)

        return self.stub.Ingest(requests(), timeout=timeout, metadata=self._metadata)

    def search(self, *, ecg_id: str | None = None, signal=None, fs: float | None = None,
               lead_names: Sequence[str] | None = None, vector=None, k: int = 10,
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

    def delete(self, ecg_ids: Sequence[str] = (), *, patient_id: str | None = None,
               timeout: float | None = None) -> int:
        response = self._call(self.stub.Delete, pb.DeleteRequest(ecg_ids=list(ecg_ids), patient_id=patient_id or ""),
                              timeout)
        return response.deleted

    def update_metadata(self, updates: Mapping[str, Mapping[str, object]], *, timeout: float | None = None) -> int:
        """updates: ecg_id -> {key: value}; None clears a key."""
        request = pb.UpdateMetadataRequest()
        for ecg_id, metadata in updates.items():
            wire.metadata_to_proto(request.updates.add(ecg_id=ecg_id).metadata, metadata)
        return self._call(self.stub.UpdateMetadata, request, timeout).updated

    def info(self, *, timeout: float | None = None) -> dict:
        from google.protobuf.json_format import MessageToDict

        response = self._call(self.stub.Info, pb.InfoRequest(), timeout)
        return MessageToDict(response, preserving_proto_field_name=True, always_print_fields_with_no_presence=True)


def ingest_request(item: IngestItem) -> pb.IngestRequest:
    request = pb.IngestRequest(ecg_id=item.ecg_id, patient_id=item.patient_id or "",
                               ecg=wire.ecg_to_proto(item.signal, item.fs, item.lead_names), replace=item.replace,
                               source=item.source or "")
    wire.metadata_to_proto(request.metadata, item.metadata)
    return request
