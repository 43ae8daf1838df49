"""The gRPC server: the Atlas service, health, reflection, auth, TLS, limits and shutdown.

``AtlasServer(config).start()`` binds the port at once (health says NOT_SERVING), then loads the
encoder, opens the store and warms the encoder up in the background; only then does health say
SERVING and do Atlas RPCs run (before that they get UNAVAILABLE). ``stop()`` refuses new RPCs,
lets running ones finish (an Ingest that is under way still gets its summary and its writes),
drains the encoder queue and closes the store.

Logs: request contents (signals, ecg ids, patient ids, metadata) are logged only at DEBUG.
"""

from __future__ import annotations

import json
import logging
import platform
import queue
import tempfile
import threading
import time
import warnings
from collections import deque
from contextlib import contextmanager
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from functools import wraps
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

import ecg_atlas
from ecg_atlas.auth import TokenAuthInterceptor
from ecg_atlas.batching import BatchingEncoder, DeadlineExpiredError, EncoderStoppedError, QueueFullError
from ecg_atlas.config import ServerConfig, default_batch_segments, default_encoder_workers
from ecg_atlas.errors import (
    AtlasError,
    EncoderMismatchError,
    InvalidECGError,
    NotFoundError,
    SignalUnavailableError,
    StoreError,
)
from ecg_atlas.errors import StorageError, StorageFullError, StorageUnavailableError
from ecg_atlas.v1 import atlas_pb2 as pb
from ecg_atlas.v1 import atlas_pb2_grpc as pb_grpc
from ecg_atlas import handlers, wire

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["Atlas"].full_name
#: ECGs written to the store per transaction during Ingest.
WRITE_BATCH = 64
#: Ingest asks the store which of this many ids it holds in one lookup (0.9 ms; 0.5 ms for one id).
EXISTS_GROUP = 8
#: Analysis calls (TrainProbe, Predict, Cluster, Explain) that run at once; more wait their turn.
ANALYSIS_WORKERS = 2


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str, reason: str = "invalid_request"):
        super().__init__(message)
        self.code = code
        self.reason = reason


_STATUS = (  # most specific first
    (InvalidECGError, grpc.StatusCode.INVALID_ARGUMENT),
    (NotFoundError, grpc.StatusCode.NOT_FOUND),
    (EncoderMismatchError, grpc.StatusCode.FAILED_PRECONDITION),
    (SignalUnavailableError, grpc.StatusCode.FAILED_PRECONDITION),
    (StorageFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),  # the store's disk is full
    (StorageUnavailableError, grpc.StatusCode.UNAVAILABLE),  # other OS write errors
    (StoreError, grpc.StatusCode.INVALID_ARGUMENT),  # bad filter, metadata type, k ...
    (QueueFullError, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (DeadlineExpiredError, grpc.StatusCode.DEADLINE_EXCEEDED),
    (EncoderStoppedError, grpc.StatusCode.UNAVAILABLE),
    (AtlasError, grpc.StatusCode.INVALID_ARGUMENT),
)


def status_of(exc: BaseException) -> tuple[grpc.StatusCode, str]:
    if isinstance(exc, _Abort):
        return exc.code, str(exc)
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            return code, str(exc)
    if isinstance(exc, (ValueError, TypeError)):
        return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
    return grpc.StatusCode.INTERNAL, "internal server error (see the server log)"


def reason_of(exc: BaseException) -> str:
    """The machine-readable cause that goes on the wire beside the status code."""
    if isinstance(exc, (_Abort, AtlasError)):
        return exc.reason
    code, _ = status_of(exc)
    return {grpc.StatusCode.RESOURCE_EXHAUSTED: "overloaded", grpc.StatusCode.DEADLINE_EXCEEDED: "deadline",
            grpc.StatusCode.UNAVAILABLE: "unavailable", grpc.StatusCode.INVALID_ARGUMENT: "invalid_request",
            }.get(code, "internal")


@contextmanager
def _guarded(service, context, name: str):
    """Ready check, then every error becomes a status the caller can act on."""
    if not service.ready.is_set():
        context.abort(grpc.StatusCode.UNAVAILABLE, "the server is loading its model; retry shortly "
                                                   "(health reports SERVING when it is ready)")
    try:
        yield
    except CancelledError:
        context.abort(grpc.StatusCode.CANCELLED, "cancelled by the client")
    except Exception as exc:  # noqa: BLE001 - every error becomes a status the caller can act on
        code, message = status_of(exc)
        if code == grpc.StatusCode.INTERNAL:
            log.error("%s failed: %s", name, type(exc).__name__, exc_info=log.isEnabledFor(logging.DEBUG))
        else:
            log.debug("%s refused: %s", name, message)
        context.abort(code, message)


def _rpc(method):
    """Ready check, error → status mapping, and total time for one Atlas method."""

    @wraps(method)
    def handler(self, request, context):
        started = time.perf_counter()
        with _guarded(self, context, method.__name__):
            _parsed(request)
            response = method(self, request, context, started)
        response.timing.total_ms = 1000 * (time.perf_counter() - started)
        return response

    return handler


def _stream_rpc(method):
    """`_rpc` for server-streaming methods: `method` yields the response messages."""

    @wraps(method)
    def handler(self, request, context):
        started = time.perf_counter()
        with _guarded(self, context, method.__name__):
            _parsed(request)
            yield from method(self, request, context, started)

    return handler


def _parsed(request) -> None:
    if isinstance(request, handlers.Unparsable):
        raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, request.describe(), reason="malformed_request")


def _remaining(context) -> float | None:
    """Seconds left before the caller's deadline; None without one (gRPC reports a huge number)."""
    remaining = context.time_remaining()
    return None if remaining is None or remaining > 1e7 else max(remaining, 0.0)


def _deadline(context) -> float | None:
    remaining = _remaining(context)
    return None if remaining is None else time.monotonic() + remaining


class AtlasService(pb_grpc.AtlasServicer):
    """The Atlas RPCs over one encoder (behind a batching queue) and one store."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.ready = threading.Event()
        self.encoder = None
        self.batcher: BatchingEncoder | None = None
        self.store = None
        self.signals = None  # analysis.signals.SignalSource: stored ECGs' samples, never a client's path
        self.identity = None
        self.encoder_threads = 0  # torch threads per encoder worker (CPU), set at load
        self.notice = ""
        self._pool = ThreadPoolExecutor(config.preprocess_workers, thread_name_prefix="preprocess")
        # Long analysis work runs here, off the RPC threads' hot path and never on an encoder worker.
        self._analysis = ThreadPoolExecutor(ANALYSIS_WORKERS, thread_name_prefix="analysis")
        self._head = None  # the built-in ecgfm-head probe, made on first use

    # -- lifecycle ------------------------------------------------------------------------------
    def load(self) -> None:
        import torch

        from ecg_atlas.analysis.signals import SignalSource
        from ecg_atlas.embedder.encoder import encoder_from_spec
        from ecg_atlas.embedder.preprocessing import MissingLeadsWarning
        from ecg_atlas.embedder.weights import encoder_notice
        from ecg_atlas.index import EncoderIdentity, Store

        # The report of every ECG lists its zero-filled leads; a process-wide warning adds nothing.
        warnings.filterwarnings("ignore", category=MissingLeadsWarning)
        cfg = self.config
        self.encoder = encoder_from_spec(cfg.checkpoint, device=cfg.device, dtype=cfg.dtype, fast=cfg.fast)
        self.notice = encoder_notice(cfg.checkpoint)
        if self.notice:
            log.info("encoder notice: %s", self.notice)
        self.identity = EncoderIdentity(self.encoder.model_id, self.encoder.checkpoint_sha256,
                                        self.encoder.contract.preprocessing_version, self.encoder.dim)
        self.store = Store.open(cfg.store, identity=self.identity, index_kind=cfg.index_kind, device=cfg.device)
        self.signals = SignalSource(self.store, cfg.data_roots)
        device = self.encoder.device.type
        if cfg.max_batch_segments is None:
            cfg.max_batch_segments = default_batch_segments(device)
        cores = torch.get_num_threads()
        if cfg.encoder_workers is None:
            cfg.encoder_workers = default_encoder_workers(device, cores, cfg.fast)
        if device == "cpu":
            # The workers share the cores: torch's intra-op thread count is process-wide, and each
            # worker's ops run on a team of that many threads.
            self.encoder_threads = max(1, cores // cfg.encoder_workers)
            torch.set_num_threads(self.encoder_threads)
        self.batcher = BatchingEncoder(self.encoder, max_batch_segments=cfg.max_batch_segments,
                                       max_queue_delay_ms=cfg.max_queue_delay_ms,
                                       max_queue_segments=cfg.max_queue_segments,
                                       workers=cfg.encoder_workers).start()
        self.batcher.warm_up()
        self.store.warm_up()
        self.ready.set()

    def close(self) -> None:
        self.ready.clear()
        self._pool.shutdown(wait=True)
        self._analysis.shutdown(wait=True)
        if self.batcher is not None:
            self.batcher.stop()
        if self.store is not None:
            self.store.close()

    # -- shared steps ---------------------------------------------------------------------------
    def _prepare(self, ecg: pb.ECG):
        from ecg_atlas.embedder.preprocessing import prepare

        if not ecg.ByteSize():
            raise InvalidECGError("no ECG was sent", reason="bad_signal")
        recording = wire.ecg_from_proto(ecg, max_duration_s=self.config.max_ecg_duration_s)
        return recording, prepare(recording, min_leads=self.config.min_leads,
                                  max_duration_s=self.config.max_ecg_duration_s)

    def _wait(self, future: Future, context):
        context.add_callback(future.cancel)
        try:
            return future.result(timeout=_remaining(context))
        except FutureTimeout:
            future.cancel()
            raise _Abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed while the encoder worked") from None

    def _embed(self, ecg: pb.ECG, context, timing: pb.Timing):
        t = time.perf_counter()
        recording, prepared = self._prepare(ecg)
        timing.preprocess_ms += 1000 * (time.perf_counter() - t)
        vectors, enc = self._wait(self.batcher.submit(prepared.segments, _deadline(context)), context)
        timing.queue_ms += enc.queue_ms
        timing.inference_ms += enc.inference_ms
        return recording, prepared, vectors

    def _metadata_columns(self) -> list[str]:
        return list(self.store.columns())

    def _stored(self, row: dict, vectors: dict | None = None) -> pb.StoredECG:
        out = pb.StoredECG(ecg_id=row["ecg_id"], patient_id=row.get("patient_id") or "")
        wire.metadata_to_proto(out.metadata, {k: v for k, v in row.items()
                                              if k not in ("ecg_id", "record_vector", "segment_vectors")})
        if row.get("record_vector") is not None:
            out.record_vector.CopyFrom(wire.vector_to_proto(row["record_vector"]))
        if row.get("segment_vectors") is not None:
            out.segment_vectors.CopyFrom(wire.matrix_to_proto(np.asarray(row["segment_vectors"], np.float32)))
        return out

    # -- RPCs -----------------------------------------------------------------------------------
    @_rpc
    def Embed(self, request, context, started):
        response = pb.EmbedResponse(model_id=self.encoder.model_id)
        _, prepared, vectors = self._embed(request.ecg, context, response.timing)
        response.record_vector.CopyFrom(wire.vector_to_proto(vectors.mean(axis=0)))
        if request.include_segment_vectors:
            response.segment_vectors.CopyFrom(wire.matrix_to_proto(vectors))
        report = prepared.report
        response.report.CopyFrom(pb.PreprocessReport(
            original_fs=report.original_fs, original_duration_s=report.original_duration_s,
            n_segments=report.n_segments, dropped_tail_s=report.dropped_tail_s,
            recorded_leads=report.recorded_leads, missing_leads=report.missing_leads,
            flat_leads=report.flat_leads, nan_leads=report.nan_leads, ignored_leads=report.ignored_leads,
            preprocessing_version=report.preprocessing_version))
        return response

    @_rpc
    def Ingest(self, request_iterator, context, started):
        return _IngestStream(self, context).run(request_iterator)

    @_rpc
    def Search(self, request, context, started):
        from ecg_atlas.index.store import MAX_K

        response = pb.SearchResponse()
        k = request.k if request.HasField("k") else 10
        max_k = min(self.config.max_k, MAX_K)
        if not 1 <= k <= max_k:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"k is {k}; ask for 1 to {max_k} hits", reason="bad_k")
        tree = wire.filter_from_proto(request.filter)
        query = request.WhichOneof("query")
        patient = request.patient_id or None
        store_s = 0.0
        if query == "ecg_id" and request.exclude_self:
            vector, by_id = None, request.ecg_id
        elif query == "ecg_id":
            t = time.perf_counter()
            row = self.store.get([request.ecg_id], columns=["patient_id", "record_vector"])[0]
            store_s += time.perf_counter() - t
            vector, by_id, patient = row["record_vector"], None, row["patient_id"]
        elif query == "ecg":
            _, _, vectors = self._embed(request.ecg, context, response.timing)
            vector, by_id = vectors.mean(axis=0), None
        elif query == "vector":
            vector, by_id = wire.vector_from_proto(request.vector), None
            if vector.shape != (self.encoder.dim,):
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, f"query vector has {vector.size} values; this "
                             f"server's model ({self.encoder.model_id}) makes {self.encoder.dim}-d vectors")
        else:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "say what to search with: ecg_id, ecg or vector")
        if request.exclude_same_patient and query != "ecg_id" and not patient:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                         "exclude_same_patient with a query ECG or vector needs the query's patient_id")
        t = time.perf_counter()
        columns = self._metadata_columns()
        if by_id is not None:
            hits = self.store.search(ecg_ids=[by_id], k=k, filter=tree, columns=columns,
                                     exclude_same_patient=request.exclude_same_patient)[0]
        else:
            hits = self.store.search(vector, k=k, filter=tree, columns=columns,
                                     exclude_same_patient=request.exclude_same_patient,
                                     query_patient_ids=[patient])[0]
            response.query_vector.CopyFrom(wire.vector_to_proto(vector))
        vectors = {}
        if request.include_vectors and hits:
            rows = self.store.get([h.ecg_id for h in hits], columns=["record_vector"])
            vectors = {h.ecg_id: r["record_vector"] for h, r in zip(hits, rows)}
        for hit in hits:
            row = {"ecg_id": hit.ecg_id, **hit.metadata}
            if hit.ecg_id in vectors:
                row["record_vector"] = vectors[hit.ecg_id]
            response.hits.add(score=hit.score, ecg=self._stored(row))
        response.timing.search_ms = 1000 * (store_s + time.perf_counter() - t)
        return response

    @_rpc
    def Get(self, request, context, started):
        response = pb.GetResponse()
        t = time.perf_counter()
        ids = list(dict.fromkeys(request.ecg_ids))
        present = self.store.existing(ids)
        found = [i for i in ids if i in present]
        columns = self._metadata_columns()
        if request.include_vectors:
            columns.append("record_vector")
        if request.include_segment_vectors:
            columns.append("segment_vectors")
        for row in self.store.get(found, columns=columns) if found else []:
            response.ecgs.append(self._stored(row))
        response.missing_ids.extend(i for i in ids if i not in present)
        response.timing.search_ms = 1000 * (time.perf_counter() - t)
        return response

    @_rpc
    def Delete(self, request, context, started):
        if not request.ecg_ids and not request.patient_id:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "say what to delete: ecg_ids and/or patient_id")
        t = time.perf_counter()
        deleted = self.store.delete(list(request.ecg_ids),
                                    patient_ids=[request.patient_id] if request.patient_id else None)
        return pb.DeleteResponse(deleted=deleted, timing=pb.Timing(search_ms=1000 * (time.perf_counter() - t)))

    @_rpc
    def UpdateMetadata(self, request, context, started):
        updates: dict[str, dict] = {}
        for update in request.updates:
            if not update.ecg_id:
                raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "every update needs an ecg_id")
            updates.setdefault(update.ecg_id, {}).update(wire.metadata_from_proto(update.metadata))
        t = time.perf_counter()
        updated = self.store.update_metadata(updates)
        return pb.UpdateMetadataResponse(updated=updated,
                                         timing=pb.Timing(search_ms=1000 * (time.perf_counter() - t)))

    @_rpc
    def Info(self, request, context, started):
        import duckdb
        import faiss
        import torch

        cfg, enc = self.config, self.encoder
        info = self.store.info()
        response = pb.InfoResponse(
            model_id=enc.model_id, checkpoint_sha256=enc.checkpoint_sha256, dim=enc.dim,
            dtype=enc.dtype if enc.fast is None else f"{enc.dtype}+{enc.fast}",
            device=str(enc.device), preprocessing_version=enc.contract.preprocessing_version,
            encoder_notice=self.notice, index_kind=info.index_kind, index_backend=info.backend,
            ecg_count=info.n_ecgs, index_entries=info.n_index_entries, auth_enabled=bool(cfg.tokens), tls=cfg.tls,
            limits=pb.Limits(
                max_batch_segments=cfg.max_batch_segments, max_queue_delay_ms=cfg.max_queue_delay_ms,
                max_queue_segments=cfg.max_queue_segments, max_concurrent_rpcs=cfg.max_concurrent_rpcs,
                max_receive_message_bytes=cfg.max_receive_message_bytes,
                max_send_message_bytes=cfg.max_send_message_bytes, max_ecg_duration_s=cfg.max_ecg_duration_s,
                min_leads=cfg.min_leads, max_k=cfg.max_k, max_ingest_in_flight=cfg.max_ingest_in_flight,
                encoder_workers=cfg.encoder_workers, threads_per_encoder_worker=self.encoder_threads))
        response.versions.update({
            "ecg_atlas": ecg_atlas.__version__, "proto": "ecg_atlas.v1", "python": platform.python_version(),
            "torch": torch.__version__, "faiss": faiss.__version__, "duckdb": duckdb.__version__,
            "grpc": grpc.__version__})
        response.columns.update(info.columns)
        response.index_settings.update({k: str(v) for k, v in info.index_settings.items()})
        return response


    # -- analysis RPCs --------------------------------------------------------------------------
    def _in_worker(self, context, work, *args, **kwargs):
        """Run `work` on the analysis pool and wait for it (up to the caller's deadline)."""
        return self._wait(self._analysis.submit(work, *args, **kwargs), context)

    @_rpc
    def TrainProbe(self, request, context, started):
        from ecg_atlas.analysis.probe import DEFAULT_MIN_POSITIVES
        from ecg_atlas.analysis.store_io import load_probe
        from ecg_atlas.analysis.tasks import SplitSpec, train_stored_probe

        if not request.name:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "name the probe (it is kept in the store under that name)")
        if not request.targets:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "name at least one target (e.g. label_groups:AF_AFL, "
                                                           "sex=F, or a boolean column)")
        fractions = tuple(request.split_fractions) or (0.7, 0.1, 0.2)
        if len(fractions) != 3:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "split_fractions are three numbers: train, val, test")
        split = SplitSpec.parse(request.split or "patient", fractions)
        tree = wire.filter_from_proto(request.filter)

        def work():
            run = train_stored_probe(
                self.store, request.name, list(request.targets), where=() if tree is None else tree, split=split,
                class_weight="balanced" if request.balanced_class_weight else None,
                n_bootstrap=request.n_bootstrap or 1000, seed=request.seed,
                min_positives=request.min_positives or DEFAULT_MIN_POSITIVES, overwrite=request.overwrite,
                data_roots=self.config.data_roots)
            return run, load_probe(self.store, request.name)[1]

        run, meta = self._in_worker(context, work)
        report = run.report
        response = pb.TrainProbeResponse(
            name=request.name, kind=report.kind, macro_auroc=wire.estimate_to_proto(report.test.macro_auroc),
            macro_auprc=wire.estimate_to_proto(report.test.macro_auprc), macro_labels=report.test.macro_labels,
            n_ecgs=int(meta.get("n_ecgs", 0)), n_patients=int(meta.get("n_patients", 0)),
            split=str(report.split.get("method", "")),
            report_json=json.dumps(report.to_dict(), default=_jsonable))
        metrics = {m.label: m for m in report.test.labels}
        for c in report.counts:
            m = metrics[c.label]
            response.labels.add(label=c.label, train_positive=c.train_positive, train_negative=c.train_negative,
                                test_positive=c.test_positive, test_negative=c.test_negative,
                                auroc=wire.estimate_to_proto(m.auroc), auprc=wire.estimate_to_proto(m.auprc),
                                c=float(c.C), flag=c.flag or "")
        response.timing.search_ms = 1000 * (time.perf_counter() - started)
        return response

    def _head_probe(self):
        from ecg_atlas.analysis.store_io import HeadProbe

        if not self.encoder.can_classify:
            raise _Abort(grpc.StatusCode.FAILED_PRECONDITION,
                         f"the built-in ecgfm-head probe needs a finetuned ECG-FM checkpoint; this server runs "
                         f"{self.encoder.model_id}, which has no classifier head")
        if self._head is None:
            self._head = HeadProbe.from_encoder(self.encoder)
        return self._head

    @_rpc
    def Predict(self, request, context, started):
        from ecg_atlas.analysis.store_io import HEAD_PROBE_NAME, check_same_encoder, load_probe, predict_stored

        if not request.probe:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "name the probe (a kept probe, or ecgfm-head)")
        if not request.ecg_ids and not request.ecgs:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "send stored ecg_ids and/or ECGs to score")
        response = pb.PredictResponse()
        head = request.probe == HEAD_PROBE_NAME
        if head:
            model = self._head_probe()
            labels, meta = model.labels, {"name": HEAD_PROBE_NAME, "identity": model.identity}
        else:
            model, meta = load_probe(self.store, request.probe)
            labels = model.labels
        keys, scores = [], []
        if request.ecg_ids:
            ids = list(request.ecg_ids)
            t = time.perf_counter()
            scores.append(self._in_worker(context, model.predict_stored, self.store, ids) if head
                          else self._in_worker(context, predict_stored, self.store, model, meta, ids))
            response.timing.search_ms += 1000 * (time.perf_counter() - t)
            keys += ids
        if request.ecgs:
            check_same_encoder(self.identity, meta)
            for i, ecg in enumerate(request.ecgs):
                _, _, vectors = self._embed(ecg, context, response.timing)
                scores.append(model.predict_segments([vectors]) if head
                              else model.predict_proba(vectors.mean(axis=0, keepdims=True)))
                keys.append(f"ecg:{i}")
        response.labels.extend(labels)
        response.keys.extend(keys)
        response.probabilities.CopyFrom(wire.matrix_to_proto(np.concatenate(scores).reshape(len(keys), len(labels))))
        return response

    @_stream_rpc
    def Cluster(self, request, context, started):
        from ecg_atlas.analysis.cohort import CohortParams
        from ecg_atlas.analysis.store_io import cluster_columns
        from ecg_atlas.analysis.tasks import cluster_stored

        if not request.run:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "name the run (its labels go into cluster_<run> columns)")
        columns = cluster_columns(request.run)  # checks the name before any work
        defaults = CohortParams()
        params = CohortParams(pca_dims=request.pca_dims or defaults.pca_dims, n_epochs=request.n_epochs or None,
                              min_cluster_size=request.min_cluster_size or None,
                              min_samples=request.min_samples or None,
                              n_neighbors=request.n_neighbors or defaults.n_neighbors,
                              seed=request.seed or defaults.seed)
        tree = wire.filter_from_proto(request.filter)
        updates: queue.Queue = queue.Queue()
        cancelled = threading.Event()
        context.add_callback(cancelled.set)

        def progress(stage: str, percent: float) -> None:
            if cancelled.is_set():  # stops the run at the next stage boundary
                raise CancelledError()
            updates.put(pb.ClusterUpdate(progress=pb.ClusterProgress(stage=stage, percent=percent)))

        def work():
            return cluster_stored(self.store, request.run, where=() if tree is None else tree, params=params,
                                  label_columns=list(request.label_columns), colour_by=list(request.colour_by),
                                  exemplar_grid=request.exemplar_grid, progress=progress,
                                  data_roots=self.config.data_roots)

        future = self._analysis.submit(work)
        future.add_done_callback(lambda _: updates.put(None))
        deadline = _deadline(context)
        while True:
            timeout = None if deadline is None else deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                cancelled.set()
                raise _Abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed while clustering")
            try:
                update = updates.get(timeout=0.5 if timeout is None else min(timeout, 0.5))
            except queue.Empty:
                continue
            if update is None:
                break
            yield update
        done = future.result()  # raises what the run raised
        r = done.result
        sizes = r.sizes()
        directory = Path(done.directory)
        tables = [str(directory / n) for n in ("enrichment.csv", "enrichment.md", "assignments.parquet", "run.json")
                  if (directory / n).exists()]
        result = pb.ClusterResult(run=request.run, n_clusters=r.n_clusters, noise=int(sizes.get(-1, 0)),
                                  n_ecgs=len(r.labels), columns=list(columns), directory=str(directory),
                                  tables=tables)
        result.cluster_sizes.update({int(k): int(v) for k, v in sizes.items()})
        result.figures.update({name: str(path) for name, path in done.figures.items()})
        result.timing.search_ms = 1000 * (time.perf_counter() - started)
        result.timing.total_ms = result.timing.search_ms
        yield pb.ClusterUpdate(result=result)

    @_rpc
    def Explain(self, request, context, started):
        from ecg_atlas.analysis.tasks import explain_ecg
        from ecg_atlas.embedder import STANDARD_LEADS
        from ecg_atlas.embedder.leads import canonical_lead_name

        response = pb.ExplainResponse(model_id=self.encoder.model_id)
        lead = canonical_lead_name(request.lead or "II")
        if lead is None:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT,
                         f"lead {request.lead!r} is not one of {', '.join(STANDARD_LEADS)}")
        query = request.WhichOneof("query")
        if query == "ecg_id":
            t = time.perf_counter()
            recording = self._in_worker(context, self.signals.recording, request.ecg_id)
            response.timing.search_ms = 1000 * (time.perf_counter() - t)
            t = time.perf_counter()
            segments = self._in_worker(context, self._prepare_recording, recording)
        elif query == "ecg":
            t = time.perf_counter()
            recording, prepared = self._prepare(request.ecg)
            segments = prepared.segments
        else:
            raise _Abort(grpc.StatusCode.INVALID_ARGUMENT, "say what to explain: ecg_id or ecg")
        response.timing.preprocess_ms = 1000 * (time.perf_counter() - t)
        t = time.perf_counter()
        tokens = np.asarray(self._in_worker(context, self.encoder.saliency, segments), dtype=np.float32)
        response.timing.inference_ms = 1000 * (time.perf_counter() - t)
        mean = tokens.mean(axis=0)
        lo, hi = float(mean.min()), float(mean.max())
        response.saliency.CopyFrom(wire.vector_to_proto(np.zeros_like(mean) if hi == lo else (mean - lo) / (hi - lo)))
        response.segment_saliency.CopyFrom(wire.matrix_to_proto(tokens))
        if request.include_png:
            with tempfile.TemporaryDirectory(prefix="ecg-atlas-explain-") as tmp:
                title = f"ECG-FM attention saliency — {request.ecg_id or 'sent ECG'}"
                path = self._in_worker(context, explain_ecg, self.encoder, recording, Path(tmp) / "explain.png",
                                       lead=lead, title=title, page=not request.single_lead, token_saliency=tokens)
                response.png = Path(path).read_bytes()
        return response

    def _prepare_recording(self, recording):
        from ecg_atlas.embedder.preprocessing import prepare

        return prepare(recording, min_leads=self.config.min_leads,
                       max_duration_s=self.config.max_ecg_duration_s).segments


def _jsonable(x):
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    raise TypeError(f"not JSON-serialisable: {type(x).__name__}")


class _IngestStream:
    """One Ingest call: decode/preprocess on the pool, embed through the batching queue, write in
    batches; at most ``max_ingest_in_flight`` ECGs between reading and writing (backpressure)."""

    def __init__(self, service: AtlasService, context):
        self.service = service
        self.context = context
        self.summary = pb.IngestSummary()
        self.timing = self.summary.timing
        self.in_flight: deque = deque()  # (index, request, Future of the prepare+embed step)
        self.to_write: list = []
        self.seen: set[str] = set()

    def run(self, requests) -> pb.IngestSummary:
        limit = self.service.config.max_ingest_in_flight
        # Requests are started a group at a time (one store lookup per group); once the stream is
        # at its in-flight limit, finished ECGs are collected until a whole group fits again, so a
        # long stream keeps asking about EXISTS_GROUP ids at once instead of one at a time.
        group_size = max(1, min(EXISTS_GROUP, limit // 4))
        group: list = []  # accepted requests not yet started
        for index, request in enumerate(requests):
            self.summary.received += 1
            if isinstance(request, handlers.Unparsable):
                self._error(index, "", grpc.StatusCode.INVALID_ARGUMENT, request.describe(), "malformed_request")
                continue
            if not request.ecg_id:
                self._error(index, "", grpc.StatusCode.INVALID_ARGUMENT, "ecg_id is empty", "missing_id")
                continue
            if request.ecg_id in self.seen:
                self._error(index, request.ecg_id, grpc.StatusCode.INVALID_ARGUMENT,
                            "this ecg_id was already sent in this stream", "duplicate_id")
                continue
            self.seen.add(request.ecg_id)
            group.append((index, request))
            if len(group) >= group_size or len(self.in_flight) + len(group) >= limit:
                self._start(group)
                group = []
                while self.in_flight and len(self.in_flight) > limit - group_size:
                    self._collect_one()
        self._start(group)
        while self.in_flight:
            self._collect_one()
        self._flush()
        return self.summary

    def _start(self, group) -> None:
        """Skip the group's ids the store already holds (one lookup for all), queue the rest."""
        check = [request.ecg_id for _, request in group if not request.replace]
        stored = self.service.store.existing(check) if check else set()
        for index, request in group:
            if request.ecg_id in stored:
                self.summary.skipped_existing += 1
            else:
                self.in_flight.append((index, request, self.service._pool.submit(self._embed, request)))

    def _embed(self, request):
        """Runs on the preprocess pool: the prepared ECG, submitted to the encoder queue."""
        service = self.service
        t = time.perf_counter()
        recording, prepared = service._prepare(request.ecg)
        preprocess_ms = 1000 * (time.perf_counter() - t)
        deadline = _deadline(self.context)
        while True:  # a full queue slows a bulk stream down instead of failing its ECGs
            try:
                return recording, prepared, service.batcher.submit(prepared.segments, deadline), preprocess_ms
            except QueueFullError:
                if not self.context.is_active():
                    raise
                time.sleep(0.02)

    def _collect_one(self) -> None:
        index, request, future = self.in_flight.popleft()
        try:
            recording, prepared, embedded, preprocess_ms = future.result()
            try:
                vectors, timing = embedded.result(timeout=_remaining(self.context))
            except FutureTimeout:
                raise _Abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed during ingest; this stream "
                             "is not acknowledged: resend it (ids already stored are skipped)") from None
        except Exception as exc:  # noqa: BLE001 - one bad ECG is reported, the stream goes on
            code, message = status_of(exc)
            # the call's deadline, a server shutting down or a client gone end the stream; the rest
            # (a bad signal, an encoder refusal, even an unexpected failure) is this ECG's alone
            if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNAVAILABLE) or not self.context.is_active():
                raise
            if code == grpc.StatusCode.INTERNAL:
                log.error("Ingest: one ECG failed: %s", type(exc).__name__, exc_info=log.isEnabledFor(logging.DEBUG))
            self._error(index, request.ecg_id, code, message, reason_of(exc))
            return
        self.timing.preprocess_ms += preprocess_ms
        self.timing.queue_ms += timing.queue_ms
        self.timing.inference_ms += timing.inference_ms
        self.to_write.append((index, request, recording, vectors))
        if len(self.to_write) >= WRITE_BATCH:
            self._flush()

    def _flush(self) -> None:
        if not self.to_write:
            return
        batch, self.to_write = self.to_write, []
        t = time.perf_counter()
        try:
            self._write(batch)
        except StorageError:  # the disk, not an ECG: the stream ends RESOURCE_EXHAUSTED / UNAVAILABLE
            raise
        except Exception:  # noqa: BLE001 - find the ECGs the store refused; store the others
            for item in batch:
                try:
                    self._write([item])
                except StorageError:
                    raise
                except Exception as exc:  # noqa: BLE001 - reported per item, the stream goes on
                    code, message = status_of(exc)
                    if code == grpc.StatusCode.INTERNAL:
                        log.error("Ingest: the store refused one ECG: %s", type(exc).__name__,
                                  exc_info=log.isEnabledFor(logging.DEBUG))
                    self._error(item[0], item[1].ecg_id, code, message, reason_of(exc))
        finally:
            self.timing.search_ms += 1000 * (time.perf_counter() - t)

    def _write(self, batch) -> None:
        service = self.service
        vectors = [v for _, _, _, v in batch]
        service.store.upsert(
            [r.ecg_id for _, r, _, _ in batch], np.stack([v.mean(axis=0) for v in vectors]),
            identity=service.identity, patient_ids=[r.patient_id or None for _, r, _, _ in batch],
            segment_vectors=vectors, sources=[r.source or None for _, r, _, _ in batch], fs=[rec.fs for _, _, rec, _ in batch],
            lead_names=[rec.lead_names for _, _, rec, _ in batch],
            duration_s=[rec.duration_s for _, _, rec, _ in batch],
            metadata=[wire.metadata_from_proto(r.metadata) for _, r, _, _ in batch],
            signals=[wire.stored_signal_from_proto(r.ecg) for _, r, _, _ in batch]
            if service.config.keep_signals else None)
        self.summary.stored += len(batch)
        self.summary.segments += sum(len(v) for v in vectors)

    def _error(self, index: int, ecg_id: str, code: grpc.StatusCode, message: str, reason: str) -> None:
        self.summary.failed += 1
        self.summary.errors.add(index=index, ecg_id=ecg_id, code=code.name, message=message, reason=reason)


class AtlasServer:
    """gRPC server around :class:`AtlasService` with health, reflection, auth, TLS and limits."""

    def __init__(self, config: ServerConfig):
        config.validate()
        self.config = config
        self.service = AtlasService(config)
        self.health = health.HealthServicer()
        self.port: int | None = None
        self.load_error: BaseException | None = None
        self._loaded = threading.Event()
        interceptors = [TokenAuthInterceptor(config.tokens)] if config.tokens else []
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=config.max_concurrent_rpcs + 4, thread_name_prefix="rpc"),
            interceptors=interceptors,
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
            options=[
                ("grpc.max_receive_message_length", config.max_receive_message_bytes),
                ("grpc.max_send_message_length", config.max_send_message_bytes),
                ("grpc.so_reuseport", 0),
            ])
        handlers.add_service(self.service, pb.DESCRIPTOR.services_by_name["Atlas"], pb, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        handlers.add_reflection((SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name),
                                self._server)
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.NOT_SERVING)

    @property
    def address(self) -> str:
        host = self.config.host
        return f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"

    def start(self, *, background_load: bool = True) -> "AtlasServer":
        """Bind and serve; the model loads in the background unless ``background_load`` is False."""
        cfg = self.config
        bind = f"[{cfg.host}]:{cfg.port}" if ":" in cfg.host else f"{cfg.host}:{cfg.port}"
        try:
            if cfg.tls:
                client_ca = cfg.tls_client_ca.read_bytes() if cfg.tls_client_ca else None
                credentials = grpc.ssl_server_credentials(
                    [(cfg.tls_key.read_bytes(), cfg.tls_cert.read_bytes())],
                    root_certificates=client_ca, require_client_auth=client_ca is not None)
                self.port = self._server.add_secure_port(bind, credentials)
            else:
                self.port = self._server.add_insecure_port(bind)
        except RuntimeError as exc:
            raise AtlasError(f"cannot listen on {bind}: {exc} (is the port in use?)") from exc
        self._server.start()
        log.info("listening on %s (tls=%s, auth=%s)", self.address, cfg.tls, bool(cfg.tokens))
        if background_load:
            threading.Thread(target=self._load, name="load-model", daemon=True).start()
        else:
            self._load()
            if self.load_error is not None:
                raise self.load_error
        return self

    def _load(self) -> None:
        try:
            t = time.perf_counter()
            self.service.load()
            for name in ("", SERVICE_NAME):
                self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
            log.info("serving: model %s on %s, warmed up in %.1f s", self.service.encoder.model_id,
                     self.service.encoder.device, time.perf_counter() - t)
        except BaseException as exc:  # noqa: BLE001 - reported by wait_ready / the serve command
            self.load_error = exc
        finally:
            self._loaded.set()

    def wait_ready(self, timeout: float | None = None) -> None:
        """Block until the model is loaded and warm; raise what loading raised."""
        if not self._loaded.wait(timeout):
            raise TimeoutError("the server did not become ready in time")
        if self.load_error is not None:
            raise self.load_error

    def stop(self, grace: float | None = None) -> None:
        """Refuse new RPCs, let running ones finish (acknowledged writes included), close the store."""
        self.health.enter_graceful_shutdown()
        grace = self.config.grace_s if grace is None else grace
        self._server.stop(grace).wait()
        self._loaded.wait()
        self.service.close()
        log.info("stopped")

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self._server.wait_for_termination(timeout)
