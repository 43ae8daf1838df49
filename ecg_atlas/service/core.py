"""The core Atlas RPCs: Embed, Ingest, Search, Get, Delete, UpdateMetadata, Info, Export, SuggestIds and Import."""

from __future__ import annotations

import json
import platform
import time

import grpc
import numpy as np
import pyarrow as pa

import ecg_atlas
from ecg_atlas import wire
from ecg_atlas.jsonable import jsonable
from ecg_atlas.limits import DEFAULT_K, DEFAULT_SUGGESTED_IDS, MAX_K, MAX_SUGGESTED_IDS
from ecg_atlas.v1 import atlas_pb2 as pb

from .calls import ms_since, rpc, stream_rpc
from .errors import Abort
from .ingest import IngestStream


def contract_with_finetuned(encoder) -> dict:
    """Info's contract: the encoder's, plus a served fine-tuned model's metadata under "finetuned"."""
    contract = encoder.contract.to_dict()
    if encoder.finetuned is not None:
        contract["finetuned"] = jsonable(encoder.finetuned)
    return contract


def stored_ecg(row: dict, vectors: dict | None = None) -> pb.StoredECG:
    out = pb.StoredECG(ecg_id=row["ecg_id"], patient_id=row.get("patient_id") or "")
    wire.metadata_to_proto(out.metadata, {k: v for k, v in row.items()
                                          if k not in ("ecg_id", "record_vector", "segment_vectors")})
    if row.get("record_vector") is not None:
        out.record_vector.CopyFrom(wire.vector_to_proto(row["record_vector"]))
    if row.get("segment_vectors") is not None:
        out.segment_vectors.CopyFrom(wire.matrix_to_proto(np.asarray(row["segment_vectors"], np.float32)))
    return out


class CoreMethods:
    """Mixed into ``AtlasService``: needs ``self.runtime``, ``self.pipeline`` and ``self.ready``."""

    @rpc
    def Embed(self, request, context, started):
        response = pb.EmbedResponse(model_id=self.runtime.encoder.model_id)
        done = self.pipeline.embed(request.ecg, context, response.timing)
        response.record_vector.CopyFrom(wire.vector_to_proto(done.record_vector))
        if request.include_segment_vectors:
            response.segment_vectors.CopyFrom(wire.matrix_to_proto(done.segment_vectors))
        report = done.prepared.report
        response.report.CopyFrom(pb.PreprocessReport(
            original_fs=report.original_fs, original_duration_s=report.original_duration_s,
            n_segments=report.n_segments, dropped_tail_s=report.dropped_tail_s,
            recorded_leads=report.recorded_leads, missing_leads=report.missing_leads,
            flat_leads=report.flat_leads, nan_leads=report.nan_leads, ignored_leads=report.ignored_leads,
            preprocessing_version=report.preprocessing_version))
        return response

    @rpc
    def Ingest(self, request_iterator, context, started):
        return IngestStream(self.runtime, self.pipeline, context).run(request_iterator)

    @rpc
    def Search(self, request, context, started):
        rt = self.runtime
        store, encoder = rt.store, rt.encoder
        response = pb.SearchResponse()
        k = request.k if request.HasField("k") else DEFAULT_K
        max_k = min(rt.config.max_k, MAX_K)
        if not 1 <= k <= max_k:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"k is {k}; ask for 1 to {max_k} hits", reason="bad_k",
                        details={"k": k, "max_k": max_k})
        tree = wire.filter_from_proto(request.filter)
        query = request.WhichOneof("query")
        patient = request.patient_id or None
        if query == "ecg_id" and request.exclude_self:
            vector, by_id = None, request.ecg_id
        elif query == "ecg_id":
            t = time.perf_counter()
            row = store.get([request.ecg_id], columns=["patient_id", "record_vector"])[0]
            response.timing.store_ms += ms_since(t)
            vector, by_id, patient = row["record_vector"], None, row["patient_id"]
        elif query == "ecg":
            vector, by_id = self.pipeline.embed(request.ecg, context, response.timing).record_vector, None
        elif query == "vector":
            vector, by_id = wire.vector_from_proto(request.vector), None
            if vector.shape != (encoder.dim,):
                raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"query vector has {vector.size} values; this "
                            f"server's model ({encoder.model_id}) makes {encoder.dim}-d vectors",
                            reason="bad_vector", details={"values": vector.size, "dim": encoder.dim})
        else:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "say what to search with: ecg_id, ecg or vector",
                        reason="no_query")
        if request.exclude_same_patient and query != "ecg_id" and not patient:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        "exclude_same_patient with a query ECG or vector needs the query's patient_id",
                        reason="no_patient_id")
        t = time.perf_counter()
        columns = list(store.columns())
        if by_id is not None:
            hits = store.search(ecg_ids=[by_id], k=k, filter=tree, columns=columns,
                                exclude_same_patient=request.exclude_same_patient)[0]
        else:
            hits = store.search(vector, k=k, filter=tree, columns=columns,
                                exclude_same_patient=request.exclude_same_patient, query_patient_ids=[patient])[0]
            response.query_vector.CopyFrom(wire.vector_to_proto(vector))
        response.timing.search_ms = ms_since(t)
        vectors = {}
        if request.include_vectors and hits:
            t = time.perf_counter()
            rows = store.get([h.ecg_id for h in hits], columns=["record_vector"])
            vectors = {h.ecg_id: r["record_vector"] for h, r in zip(hits, rows)}
            response.timing.store_ms += ms_since(t)
        for hit in hits:
            row = {"ecg_id": hit.ecg_id, **hit.metadata}
            if hit.ecg_id in vectors:
                row["record_vector"] = vectors[hit.ecg_id]
            response.hits.add(score=hit.score, ecg=stored_ecg(row))
        return response

    @rpc
    def Get(self, request, context, started):
        store = self.runtime.store
        response = pb.GetResponse()
        t = time.perf_counter()
        ids = list(dict.fromkeys(request.ecg_ids))
        present = store.existing(ids)
        found = [i for i in ids if i in present]
        columns = list(store.columns())
        if request.include_vectors:
            columns.append("record_vector")
        if request.include_segment_vectors:
            columns.append("segment_vectors")
        for row in store.get(found, columns=columns) if found else []:
            response.ecgs.append(stored_ecg(row))
        response.missing_ids.extend(i for i in ids if i not in present)
        response.timing.store_ms = ms_since(t)
        return response

    @rpc
    def GetSignal(self, request, context, started):
        t = time.perf_counter()
        recording = self.runtime.signals.recording(request.ecg_id)
        digital = recording.digital
        ecg = (wire.ecg_to_proto(digital.samples, recording.fs, recording.lead_names, gain=digital.gain,
                                 baseline=digital.baseline) if digital is not None
               else wire.ecg_to_proto(recording.signal, recording.fs, recording.lead_names))
        return pb.GetSignalResponse(ecg_id=request.ecg_id, ecg=ecg, timing=pb.Timing(store_ms=ms_since(t)))

    @rpc
    def Delete(self, request, context, started):
        if not request.ecg_ids and not request.patient_id:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "say what to delete: ecg_ids and/or patient_id",
                        reason="nothing_to_delete")
        t = time.perf_counter()
        deleted = self.runtime.store.delete(list(request.ecg_ids),
                                            patient_ids=[request.patient_id] if request.patient_id else None)
        return pb.DeleteResponse(deleted=deleted, timing=pb.Timing(store_ms=ms_since(t)))

    @rpc
    def Import(self, request, context, started):
        from ecg_atlas.bulk.shards import identity_of, shard_files_under_roots

        if not request.shards:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "name the shard files or folders to import",
                        reason="nothing_to_import")
        files = shard_files_under_roots(list(request.shards), self.runtime.config.data_roots)
        t = time.perf_counter()
        result = self.runtime.store.import_shards(files, identity=identity_of(files))
        return pb.ImportResponse(inserted=result.inserted, skipped_existing=result.skipped_existing,
                                 refused=result.refused, files=len(files), refusals=result.refusals,
                                 timing=pb.Timing(store_ms=ms_since(t)))

    @rpc
    def UpdateMetadata(self, request, context, started):
        updates: dict[str, dict] = {}
        for update in request.updates:
            if not update.ecg_id:
                raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "every update needs an ecg_id", reason="missing_id")
            updates.setdefault(update.ecg_id, {}).update(wire.metadata_from_proto(update.metadata))
        t = time.perf_counter()
        updated = self.runtime.store.update_metadata(updates)
        return pb.UpdateMetadataResponse(updated=updated, timing=pb.Timing(store_ms=ms_since(t)))

    @rpc
    def Info(self, request, context, started):
        import duckdb
        import faiss
        import torch

        rt = self.runtime
        cfg, enc = rt.config, rt.encoder
        info = rt.store.info()
        response = pb.InfoResponse(
            model_id=enc.model_id, checkpoint_sha256=enc.checkpoint_sha256, dim=enc.dim,
            dtype=enc.dtype if enc.fast is None else f"{enc.dtype}+{enc.fast}",
            device=str(enc.device), preprocessing_version=enc.contract.preprocessing_version,
            encoder_notice=rt.notice, index_kind=info.index_kind, index_backend=info.backend,
            ecg_count=info.n_ecgs, index_entries=info.n_index_entries, auth_enabled=bool(cfg.tokens), tls=cfg.tls,
            encoder_contract_json=json.dumps(contract_with_finetuned(enc)),
            limits=pb.Limits(
                max_batch_segments=rt.max_batch_segments, max_queue_delay_ms=cfg.max_queue_delay_ms,
                max_queue_segments=cfg.max_queue_segments, max_concurrent_rpcs=cfg.max_concurrent_rpcs,
                max_receive_message_bytes=cfg.max_receive_message_bytes,
                max_send_message_bytes=cfg.max_send_message_bytes, max_ecg_duration_s=cfg.max_ecg_duration_s,
                min_leads=cfg.min_leads, max_k=cfg.max_k, max_ingest_in_flight=cfg.max_ingest_in_flight,
                encoder_workers=rt.encoder_workers, threads_per_encoder_worker=rt.encoder_threads))
        response.versions.update({
            "ecg_atlas": ecg_atlas.__version__, "proto": "ecg_atlas.v1", "python": platform.python_version(),
            "torch": torch.__version__, "faiss": faiss.__version__, "duckdb": duckdb.__version__,
            "grpc": grpc.__version__})
        response.columns.update(info.columns)
        response.index_settings.update({k: str(v) for k, v in info.index_settings.items()})
        return response

    @rpc
    def SuggestIds(self, request, context, started):
        limit = request.limit or DEFAULT_SUGGESTED_IDS
        if not 1 <= limit <= MAX_SUGGESTED_IDS:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, f"limit is {limit}; ask for 1 to {MAX_SUGGESTED_IDS} ids",
                        reason="bad_limit", details={"limit": limit, "max_limit": MAX_SUGGESTED_IDS})
        t = time.perf_counter()
        ids = self.runtime.store.ids_with_prefix(request.prefix, limit)
        return pb.SuggestIdsResponse(ecg_ids=ids, timing=pb.Timing(store_ms=ms_since(t)))

    @stream_rpc
    def Export(self, request, context, started):
        columns = list(request.columns) or None
        tree = wire.filter_from_proto(request.filter)
        t = time.perf_counter()
        for batch in self.runtime.store.iter_batches(filter=tree, columns=columns,
                                                     with_vectors=request.include_vectors, batch_size=2_048):
            if not context.is_active():
                return
            sink = pa.BufferOutputStream()
            with pa.ipc.new_stream(sink, batch.schema) as writer:
                writer.write_batch(batch)
            response = pb.ExportResponse(arrow_ipc=sink.getvalue().to_pybytes())
            response.timing.store_ms = ms_since(t)
            response.timing.total_ms = ms_since(started)
            yield response
            t = time.perf_counter()
