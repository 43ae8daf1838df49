"""The analysis RPCs: TrainProbe, ListProbes, EvaluateProbe, Predict, Cluster and Explain.

Long work runs on the runtime's analysis pool (never on an encoder worker), bounded by the
caller's deadline. Files the analysis writes stay in the store; what a caller gets back travels
as bytes (figures, tables), never as server paths.
"""

from __future__ import annotations

import json
import queue
import tempfile
import threading
import time
from concurrent.futures import CancelledError
from pathlib import Path

import grpc
import numpy as np

from ecg_atlas import wire
from ecg_atlas.jsonable import jsonable
from ecg_atlas.v1 import atlas_pb2 as pb

from .calls import deadline, ms_since, rpc, stream_rpc, wait
from .errors import Abort

#: A cluster run's tables that travel back with its result, by response field.
_CLUSTER_TABLES = {"enrichment_csv": "enrichment.csv", "enrichment_markdown": "enrichment.md", "run_json": "run.json"}


def _arrow_file_as_stream(path: Path) -> bytes:
    """A Parquet table the analysis wrote, as Arrow IPC stream bytes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _label_reports(target, metrics, counts=None) -> None:
    """Fill repeated LabelReport `target` from an analysis.metrics.MetricSet (and training counts)."""
    by_label = {m.label: m for m in metrics.labels}
    if counts is None:
        for m in metrics.labels:
            target.add(label=m.label, test_positive=m.n_positive, test_negative=m.n_negative,
                       auroc=wire.estimate_to_proto(m.auroc), auprc=wire.estimate_to_proto(m.auprc))
        return
    for c in counts:
        m = by_label[c.label]
        target.add(label=c.label, train_positive=c.train_positive, train_negative=c.train_negative,
                   test_positive=c.test_positive, test_negative=c.test_negative,
                   auroc=wire.estimate_to_proto(m.auroc), auprc=wire.estimate_to_proto(m.auprc),
                   c=float(c.C), flag=c.flag or "")


def finetuned_entry(encoder) -> dict | None:
    """The served fine-tuned head as a ListProbes entry (kind "fine-tuned", Predict name ``head``), in
    the kept probes' shape: its report holds the metrics saved in model.pt ("test": test metrics, else
    validation), and the model's metadata under "finetuned"."""
    meta = encoder.finetuned
    if meta is None:
        return None
    metrics = meta.get("metrics") or {}
    part = "test" if metrics.get("test") else "val"
    shown = metrics.get(part) or {}
    macro = ((shown.get("macro") or {}).get("auroc") or {}).get("value")
    about = {k: v for k, v in meta.items() if k != "metrics"}
    report = {"kind": "fine-tuned", "test": shown, "evaluated_on": part, "metrics": metrics, "finetuned": about,
              "split": {"method": f"fine-tuning split ({part})"}}
    return {"name": "head", "kind": "fine-tuned", "labels": list(encoder.label_names), "model_id": encoder.model_id,
            "created_at": meta.get("created_at") or "", "macro_auroc": macro, "where": [], "report": report}


class AnalysisMethods:
    """Mixed into ``AtlasService``: needs ``self.runtime`` and ``self.pipeline``."""

    def _in_worker(self, context, work, *args, **kwargs):
        """Run `work` on the analysis pool and wait for it (up to the caller's deadline)."""
        return wait(self.runtime.analysis.submit(work, *args, **kwargs), context, "the analysis ran")

    @rpc
    def TrainProbe(self, request, context, started):
        from ecg_atlas.analysis.probe import DEFAULT_MIN_POSITIVES
        from ecg_atlas.analysis.store_io import load_probe
        from ecg_atlas.analysis.tasks import SplitSpec, train_stored_probe

        rt = self.runtime
        if not request.name:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "name the probe (it is kept in the store under that name)",
                        reason="missing_name")
        if not request.targets:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "name at least one target (e.g. label_groups:AF_AFL, "
                                                          "sex=F, or a boolean column)", reason="missing_target")
        fractions = tuple(request.split_fractions) or (0.7, 0.1, 0.2)
        if len(fractions) != 3:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "split_fractions are three numbers: train, val, test",
                        reason="bad_split")
        split = SplitSpec.parse(request.split or "patient", fractions)
        tree = wire.filter_from_proto(request.filter)

        def work():
            run = train_stored_probe(
                rt.store, request.name, list(request.targets), where=() if tree is None else tree, split=split,
                class_weight="balanced" if request.balanced_class_weight else None,
                n_bootstrap=request.n_bootstrap or 1000, seed=request.seed,
                min_positives=request.min_positives or DEFAULT_MIN_POSITIVES, overwrite=request.overwrite,
                baseline_encoder=rt.encoder.random_twin(seed=request.seed) if request.baseline else None,
                data_roots=rt.config.data_roots)
            return run, load_probe(rt.store, request.name)[1]

        t = time.perf_counter()
        run, meta = self._in_worker(context, work)
        report = run.report
        response = pb.TrainProbeResponse(
            name=request.name, kind=report.kind, macro_auroc=wire.estimate_to_proto(report.test.macro_auroc),
            macro_auprc=wire.estimate_to_proto(report.test.macro_auprc), macro_labels=report.test.macro_labels,
            n_ecgs=int(meta.get("n_ecgs", 0)), n_patients=int(meta.get("n_patients", 0)),
            split=str(report.split.get("method", "")),
            report_json=json.dumps(jsonable(report.to_dict())))
        _label_reports(response.labels, report.test, report.counts)
        response.timing.analysis_ms = ms_since(t)
        return response

    @rpc
    def ListProbes(self, request, context, started):
        from ecg_atlas.analysis.store_io import list_probes

        response = pb.ListProbesResponse()
        t = time.perf_counter()
        served = finetuned_entry(self.runtime.encoder)
        for probe in ([served] if served else []) + list_probes(self.runtime.store):
            auroc = probe.get("macro_auroc")
            response.probes.add(name=probe["name"], kind=probe["kind"], labels=probe["labels"],
                                model_id=probe.get("model_id") or "", created_at=probe.get("created_at") or "",
                                macro_auroc=float("nan") if auroc is None else float(auroc),
                                where=[str(w) for w in probe.get("where", [])],
                                report_json=json.dumps(jsonable(probe["report"])))
        response.timing.store_ms = ms_since(t)
        return response

    @rpc
    def EvaluateProbe(self, request, context, started):
        from ecg_atlas.analysis.tasks import evaluate_stored_probe

        if not request.name:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "name the probe to evaluate", reason="missing_name")
        tree = wire.filter_from_proto(request.filter)
        t = time.perf_counter()
        metrics, n_used, n_left_out = self._in_worker(
            context, evaluate_stored_probe, self.runtime.store, request.name, where=() if tree is None else tree,
            n_bootstrap=request.n_bootstrap or 1000, seed=request.seed)
        response = pb.EvaluateProbeResponse(
            name=request.name, macro_auroc=wire.estimate_to_proto(metrics.macro_auroc),
            macro_auprc=wire.estimate_to_proto(metrics.macro_auprc), macro_labels=metrics.macro_labels,
            n_ecgs=n_used, n_left_out=n_left_out)
        _label_reports(response.labels, metrics)
        response.timing.analysis_ms = ms_since(t)
        return response

    def _head_probe(self):
        from ecg_atlas.analysis.store_io import HeadProbe

        rt = self.runtime
        if not rt.encoder.can_classify:
            raise Abort(grpc.StatusCode.FAILED_PRECONDITION,
                        f"the built-in head probe (head, ecgfm-head) needs a finetuned encoder: an ECG-FM finetuned "
                        f"checkpoint or a model.pt of ecg-atlas finetune; this server runs {rt.encoder.model_id}, "
                        f"which has no classifier head to serve", reason="no_classifier_head")
        if self._head is None:
            self._head = HeadProbe.from_encoder(rt.encoder)
        return self._head

    @rpc
    def Predict(self, request, context, started):
        from ecg_atlas.analysis.store_io import HEAD_PROBE_NAMES, check_same_encoder, load_probe, predict_stored

        rt = self.runtime
        if not request.probe:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "name the probe (a kept probe, or head for the served "
                        "encoder's own head)", reason="missing_name")
        if not request.ecg_ids and not request.ecgs:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "send stored ecg_ids and/or ECGs to score",
                        reason="nothing_to_score")
        response = pb.PredictResponse()
        head = request.probe in HEAD_PROBE_NAMES
        if head:
            model = self._head_probe()
            labels, meta = model.labels, {"name": request.probe, "identity": model.identity}
        else:
            model, meta = load_probe(rt.store, request.probe)
            labels = model.labels
        keys, scores = [], []
        if request.ecg_ids:
            ids = list(request.ecg_ids)
            t = time.perf_counter()
            scores.append(self._in_worker(context, model.predict_stored, rt.store, ids) if head
                          else self._in_worker(context, predict_stored, rt.store, model, meta, ids))
            response.timing.analysis_ms += ms_since(t)
            keys += ids
        if request.ecgs:
            check_same_encoder(rt.identity, meta)
            for i, ecg in enumerate(request.ecgs):
                done = self.pipeline.embed(ecg, context, response.timing)
                scores.append(model.predict_segments([done.segment_vectors]) if head
                              else model.predict_proba(done.record_vector[None, :]))
                keys.append(f"ecg:{i}")
        response.labels.extend(labels)
        response.keys.extend(keys)
        response.probabilities.CopyFrom(wire.matrix_to_proto(np.concatenate(scores).reshape(len(keys), len(labels))))
        return response

    @stream_rpc
    def Cluster(self, request, context, started):
        from ecg_atlas.analysis.cohort import CohortParams
        from ecg_atlas.analysis.store_io import cluster_columns
        from ecg_atlas.analysis.tasks import cluster_stored

        rt = self.runtime
        if not request.run:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "name the run (its labels go into cluster_<run> columns)",
                        reason="missing_name")
        columns = cluster_columns(request.run)  # checks the name before any work
        defaults = CohortParams()
        params = CohortParams(pca_dims=request.pca_dims or defaults.pca_dims, n_epochs=request.n_epochs or None,
                              min_cluster_size=request.min_cluster_size or None,
                              min_samples=request.min_samples or None,
                              n_neighbors=request.n_neighbors or defaults.n_neighbors,
                              cluster_dims=request.cluster_dims or defaults.cluster_dims,
                              n_exemplars=request.n_exemplars or defaults.n_exemplars,
                              seed=request.seed or defaults.seed)
        tree = wire.filter_from_proto(request.filter)
        updates: queue.Queue = queue.Queue()
        cancelled = threading.Event()
        context.add_callback(cancelled.set)

        def progress(stage: str, percent: float) -> None:
            if cancelled.is_set():  # stops the run at the next stage boundary
                raise CancelledError()
            updates.put(pb.ClusterResponse(progress=pb.ClusterProgress(stage=stage, percent=percent)))

        def work():
            return cluster_stored(rt.store, request.run, where=() if tree is None else tree, params=params,
                                  label_columns=list(request.label_columns), colour_by=list(request.colour_by),
                                  exemplar_grid=request.exemplar_grid, progress=progress,
                                  data_roots=rt.config.data_roots)

        future = rt.analysis.submit(work)
        future.add_done_callback(lambda _: updates.put(None))
        at_deadline = deadline(context)
        while True:
            timeout = None if at_deadline is None else at_deadline - time.monotonic()
            if timeout is not None and timeout <= 0:
                cancelled.set()
                raise Abort(grpc.StatusCode.DEADLINE_EXCEEDED, "the deadline passed while clustering",
                            reason="deadline")
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
        result = pb.ClusterResult(run=request.run, n_clusters=r.n_clusters, noise=int(sizes.get(-1, 0)),
                                  n_ecgs=len(r.labels), columns=list(columns))
        for field, name in _CLUSTER_TABLES.items():
            if (directory / name).exists():
                setattr(result, field, (directory / name).read_text())
        result.cluster_sizes.update({int(k): int(v) for k, v in sizes.items()})
        for name, path in done.figures.items():
            result.figures[name] = Path(path).read_bytes()
        result.timing.analysis_ms = ms_since(started)
        result.timing.total_ms = result.timing.analysis_ms
        yield pb.ClusterResponse(result=result)

    @rpc
    def ListClusterRuns(self, request, context, started):
        from ecg_atlas.analysis.store_io import list_cluster_runs

        response = pb.ListClusterRunsResponse()
        t = time.perf_counter()
        for record in list_cluster_runs(self.runtime.store):
            sizes = record.get("sizes", {})
            response.runs.add(run=record["run"], n_ecgs=int(record.get("n_ecgs", 0)),
                              n_clusters=sum(1 for k in sizes if int(k) >= 0),
                              created_at=record.get("created_at", ""), where=[str(w) for w in record.get("where", [])])
        response.timing.store_ms = ms_since(t)
        return response

    @rpc
    def GetClusterRun(self, request, context, started):
        from ecg_atlas.analysis.store_io import load_cluster_run, run_dir

        t = time.perf_counter()
        record = load_cluster_run(self.runtime.store, request.run)  # NotFoundError for an unknown run
        directory = run_dir(self.runtime.store, request.run)
        response = pb.GetClusterRunResponse(run=request.run, run_json=json.dumps(jsonable(record)),
                                            assignments_arrow=_arrow_file_as_stream(directory / "assignments.parquet"))
        if (directory / "enrichment.csv").exists():
            response.enrichment_csv = (directory / "enrichment.csv").read_text()
        response.timing.store_ms = ms_since(t)
        return response

    @rpc
    def Explain(self, request, context, started):
        from ecg_atlas.analysis.tasks import explain_ecg
        from ecg_atlas.embedder import STANDARD_LEADS
        from ecg_atlas.embedder.leads import canonical_lead_name

        rt = self.runtime
        if not hasattr(rt.encoder, "saliency"):
            raise Abort(grpc.StatusCode.FAILED_PRECONDITION,
                        f"{rt.encoder.contract.name} has no attention saliency (only ECG-FM-architecture encoders "
                        f"do); this server runs {rt.encoder.model_id}", reason="no_saliency")
        response = pb.ExplainResponse(model_id=rt.encoder.model_id)
        lead = canonical_lead_name(request.lead or "II")
        if lead is None:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT,
                        f"lead {request.lead!r} is not one of {', '.join(STANDARD_LEADS)}", reason="bad_lead")
        query = request.WhichOneof("query")
        if query == "ecg_id":
            t = time.perf_counter()
            recording = self._in_worker(context, rt.signals.recording, request.ecg_id)
            response.timing.store_ms = ms_since(t)
            t = time.perf_counter()
            segments = self._in_worker(context, self.pipeline.prepare_recording, recording).segments
        elif query == "ecg":
            t = time.perf_counter()
            recording, prepared = self.pipeline.prepare(request.ecg)
            segments = prepared.segments
        else:
            raise Abort(grpc.StatusCode.INVALID_ARGUMENT, "say what to explain: ecg_id or ecg", reason="no_query")
        response.timing.preprocess_ms = ms_since(t)
        t = time.perf_counter()
        tokens = np.asarray(self._in_worker(context, rt.encoder.saliency, segments), dtype=np.float32)
        response.timing.inference_ms = ms_since(t)
        mean = tokens.mean(axis=0)  # over the ECG's segments
        lo, hi = float(mean.min()), float(mean.max())
        response.saliency.CopyFrom(wire.vector_to_proto(np.zeros_like(mean) if hi == lo else (mean - lo) / (hi - lo)))
        response.segment_saliency.CopyFrom(wire.matrix_to_proto(tokens))
        if request.include_png:
            t = time.perf_counter()
            with tempfile.TemporaryDirectory(prefix="ecg-atlas-explain-") as tmp:
                title = f"{rt.encoder.contract.name} attention saliency — {request.ecg_id or 'sent ECG'}"
                path = self._in_worker(context, explain_ecg, rt.encoder, recording, Path(tmp) / "explain.png",
                                       lead=lead, title=title, page=not request.single_lead, token_saliency=tokens)
                response.png = Path(path).read_bytes()
            response.timing.analysis_ms = ms_since(t)
        return response
