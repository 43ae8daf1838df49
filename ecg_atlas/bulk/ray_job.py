"""Bulk embedding on Ray Data: ECG files in, Parquet shards out (``ecg-atlas embed --engine ray``).

The pipeline (needs the ``ecg-atlas[ray]`` extra)::

    input list  ->  read + preprocess (CPU tasks, every reader format, the encoder's own pipeline)
                ->  embed (an actor pool of encoders: one GPU each in bfloat16 where the cluster
                    has GPUs, CPU actors in float32 otherwise)
                ->  the driver writes each shard once all its ECGs are back (shards.py)

**Resumable, never duplicated.** Shard ``i`` holds input items ``i*shard_size`` up to the next
shard's first, in input order: the assignment depends on nothing but the input list, which
``job.json`` pins (a re-run with another list or shard size into the same folder is refused).
A shard file is written atomically only when complete, so a re-run skips every shard file that
exists. Ray restarts a killed encoder actor and retries the batch it held; the driver keeps the
first result for each input position and drops any repeat, so a killed worker's work is done
again and lands once.

**Patient ids in files are pseudonymised** as `ecg-atlas ingest` does it (ecg_atlas/ingest/pseudonym.py):
with the operator's key (``--patient-key-file`` or $ECG_ATLAS_PATIENT_KEY) the task that reads a
file turns the patient id it names into its keyed pseudonym, and only the pseudonym leaves that
task; without a key no patient id is taken from files. A manifest's patient column wins, as a
metadata CSV's does for ingest. The key reaches the workers inside the pickled pseudonymiser
(never in an environment variable or a log; its repr hides it), and the job's fingerprint
includes a digest of it: resuming with another key, or none, is refused.

**A manifest is typed as `ecg-atlas ingest` types a metadata CSV** (ecg_atlas/ingest/manifest.py):
the same file gives the same metadata types and values on both paths.

With GPU actors, reading runs in CPU tasks apart from the actors; on CPU-only clusters each
encoder actor reads its own batches (its CPUs are the cluster's; nothing would be left to
separate readers, and the windows need no trip through the object store).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pickle
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from ecg_atlas.embedder.prefetch import prefetch
from ecg_atlas.errors import AtlasError
from ecg_atlas.ingest.pseudonym import PatientPseudonymiser, pseudonym_in_file
from ecg_atlas.ingest.sources import header_metadata, source_uri
from ecg_atlas.refusal import read_refusal

from .shards import SHARD_PATTERN, ShardItem, encoder_identity, shard_table, write_shard

JOB_FILE = "job.json"
#: Records per read/preprocess task call.
READ_BATCH = 16
#: ECGs per call of a CPU encoder actor (at least --batch-size; one block per call). Each call
#: ends with one partial forward pass; batches of --batch-size ECGs cut from blocks of ~34 made
#: two calls per block, one of them a couple of ECGs (BENCHMARKS.md, Scale).
CPU_CALL_ECGS = 128


@dataclass(frozen=True)
class InputECG:
    """One ECG to embed: where it is (HDF5: which row), its id, patient and metadata."""

    ecg_id: str
    path: str
    row: int | None = None
    patient_id: str | None = None
    metadata: dict = field(default_factory=dict)


@dataclass
class JobOptions:
    checkpoint: str = "bundled"
    revision: str | None = None
    checkpoint_sha256: str | None = None
    #: None: bfloat16 on GPU actors, float32 on CPU actors.
    dtype: str | None = None
    #: Segments per forward pass.
    batch_size: int = 32
    #: Encoder actors; None: one per GPU, or one per `cpus_per_actor` CPUs.
    concurrency: int | None = None
    #: CPUs (torch threads) per CPU encoder actor; None: all the cluster's CPUs / concurrency.
    cpus_per_actor: int | None = None
    shard_size: int = 10_000
    min_leads: int | None = None
    #: "auto": GPU actors when the cluster has GPUs; "cpu" forces CPU actors.
    device: str = "auto"
    #: Turns patient ids found in files into the shards' pseudonyms; None: none taken from files.
    pseudonymiser: PatientPseudonymiser | None = None


@dataclass
class JobSummary:
    out: str
    inputs: int
    shards: int
    shards_skipped: int
    embedded: int
    refused: int
    refusal_reasons: dict[str, int]
    duplicates_dropped: int
    seconds: float
    ecgs_per_s: float | None
    actors: int
    actor_device: str
    dtype: str
    model_id: str
    checkpoint_sha256: str
    dim: int


# ---------------------------------------------------------------------------------------------
# Inputs


def inputs_from_paths(paths: Iterable[str | Path]) -> list[InputECG]:
    """Every ECG under `paths` (files or directories), ids as `ecg-atlas embed` gives them."""
    from ecg_atlas.embedder.discover import find_ecgs

    return [InputECG(s.ecg_id, os.path.abspath(s.path), s.row) for s in find_ecgs(paths)]


def inputs_from_manifest(manifest: Path, *, path_column: str = "path", id_column: str | None = None,
                         patient_column: str | None = None) -> list[InputECG]:
    """The ECGs a CSV or Parquet manifest lists, one row each: `path_column` (relative to the
    manifest's folder; a WFDB record may be named without ``.hea``), optionally `id_column`
    (default: the path without its extension) and `patient_column` (default: ``patient_id``
    when present); every other column is stored as metadata under its own (lower-cased) name,
    typed as `ecg-atlas ingest` types a metadata CSV (ecg_atlas/ingest/manifest.py). An HDF5
    file's rows are each an ECG."""
    from ecg_atlas.embedder.discover import default_ecg_id, find_ecgs
    from ecg_atlas.index.schema import RESERVED_NAMES, check_metadata_name
    from ecg_atlas.ingest.manifest import read_manifest

    manifest = Path(manifest)
    table = read_manifest(manifest)
    if path_column not in table.columns:
        raise AtlasError(f"manifest {manifest} has no column {path_column!r} (columns: "
                         f"{', '.join(table.columns)}); pass --path-column")
    if patient_column is None and "patient_id" in table.columns:
        patient_column = "patient_id"
    for given in (id_column, patient_column):
        if given is not None and given not in table.columns:
            raise AtlasError(f"manifest {manifest} has no column {given!r}")
    skipped = {path_column, id_column, patient_column}
    meta_columns = [c for c in table.columns if c not in skipped and c.lower() not in RESERVED_NAMES]
    for name in meta_columns:
        check_metadata_name(name.lower())
    paths = table.raw(path_column)
    ids = table.raw(id_column) if id_column else [None] * len(paths)
    patients = table.raw(patient_column) if patient_column else [None] * len(paths)
    metadata_rows = table.metadata_rows({c: c.lower() for c in meta_columns})
    root = manifest.parent
    out = []
    for number, (given, ecg_id, patient, metadata) in enumerate(zip(paths, ids, patients, metadata_rows), 1):
        if given is None:
            raise AtlasError(f"manifest {manifest}: row {number} has no {path_column!r}")
        path = root / given
        if not path.exists() and path.with_suffix(path.suffix + ".hea").exists():
            path = path.with_suffix(path.suffix + ".hea")
        if not path.exists():
            raise AtlasError(f"manifest {manifest} lists {given!r}, which is not there ({path})")
        if id_column and ecg_id is None:
            raise AtlasError(f"manifest {manifest}: row {number} has no {id_column!r}")
        base_id = ecg_id if id_column else default_ecg_id(path, root)
        sources = list(find_ecgs([path]))
        for source in sources:
            item_id = base_id if len(sources) == 1 else f"{base_id}/{source.ecg_id.rsplit('/', 1)[-1]}"
            out.append(InputECG(item_id, os.path.abspath(source.path), source.row, patient, metadata))
    return out


# ---------------------------------------------------------------------------------------------
# The two steps that run on the cluster


def read_and_prepare(batch: dict, *, prepare: Callable, min_leads: int | None,
                     pseudonymiser: PatientPseudonymiser | None = None) -> dict:
    """Ray Data step 1 (CPU): read each file and run the encoder's pipeline on it. The patient id
    a file names leaves this step only as its pseudonym (``file_patient``; "" for none).

    `prepare` is the encoder's own pipeline (``BaseEncoder.preprocessing``: a module-level
    function; no weights are needed, so no encoder is shipped to the readers).
    """
    reads = [_read_row(batch, i, prepare, min_leads, pseudonymiser) for i in range(len(batch["position"]))]
    return _prepared_columns(batch["position"], reads)


@dataclass
class _Read:
    """One row of step 1: its windows and what the file says, or its refusal."""

    windows: np.ndarray
    reason: str = ""
    message: str = ""
    fs: float = np.nan
    lead_names: list = field(default_factory=list)
    duration_s: float = np.nan
    file_metadata: dict = field(default_factory=dict)
    file_patient: str = ""


def _read_row(batch: dict, i: int, prepare: Callable, min_leads: int | None,
              pseudonymiser: PatientPseudonymiser | None) -> _Read:
    from ecg_atlas.embedder.discover import ECGSource, read_source

    row = None if batch["row"][i] < 0 else int(batch["row"][i])
    source = ECGSource(Path(batch["path"][i]), str(batch["ecg_id"][i]), row)
    try:
        rec = read_source(source)
        patient = pseudonym_in_file(rec, pseudonymiser) or ""
        extra = header_metadata(rec)
        kwargs = {} if min_leads is None else {"min_leads": min_leads}
        windows = np.ascontiguousarray(prepare(rec, **kwargs).segments, dtype=np.float32)
        return _Read(windows, fs=rec.fs, lead_names=list(rec.lead_names), duration_s=rec.duration_s,
                     file_metadata=extra, file_patient=patient)
    except Exception as exc:  # one bad file is a refusal, never a failed job
        error = read_refusal(exc, source.ecg_id)
        return _Read(np.zeros((0, 1, 1), np.float32), reason=error.reason, message=str(error))


def _prepared_columns(position: np.ndarray, reads: Sequence[_Read]) -> dict:
    return {"position": position, "windows": _objects([r.windows for r in reads]),
            "reason": np.array([r.reason for r in reads], object),
            "message": np.array([r.message for r in reads], object),
            "fs": np.array([r.fs for r in reads], np.float64), "lead_names": _objects([r.lead_names for r in reads]),
            "duration_s": np.array([r.duration_s for r in reads], np.float64),
            "file_metadata": _objects([pickle.dumps(r.file_metadata) for r in reads]),
            "file_patient": np.array([r.file_patient for r in reads], object)}


def _objects(values: Sequence) -> np.ndarray:
    out = np.empty(len(values), dtype=object)
    out[:] = values
    return out


class EncoderActor:
    """Ray Data step 2: one encoder per actor (one GPU each where there are GPUs). CPU actors
    also do step 1 for their own batches (`prepare` given), on a thread reading ahead of the
    encoder: a CPU actor holding all of its CPUs would otherwise leave none to the readers that
    feed it."""

    def __init__(self, spec: str, device: str, dtype: str, batch_size: int, threads: int | None,
                 revision: str | None, checkpoint_sha256: str | None, prepare: Callable | None = None,
                 min_leads: int | None = None, pseudonymiser: PatientPseudonymiser | None = None) -> None:
        import torch

        from ecg_atlas.embedder.engine import EmbeddingEngine
        from ecg_atlas.embedder.resolver import load_encoder

        if threads:
            torch.set_num_threads(threads)
        encoder = load_encoder(spec, device=device, dtype=dtype, revision=revision, expected_sha256=checkpoint_sha256)
        self.engine = EmbeddingEngine(encoder, batch_size=batch_size)
        self.prepare, self.min_leads, self.pseudonymiser = prepare, min_leads, pseudonymiser

    def __call__(self, batch: dict) -> dict:
        n = len(batch["position"])
        dim = self.engine.dim
        records = np.zeros((n, dim), np.float32)
        segments = _objects([np.zeros((0, dim), np.float32)] * n)
        if self.prepare is None:  # step 1 ran in CPU tasks
            todo = ((i, w) for i, (w, reason) in enumerate(zip(batch["windows"], batch["reason"])) if not reason)
        else:
            reads: list[_Read] = []
            todo = self._read_ahead(batch, reads)
        for done in self.engine.embed_records(todo):
            records[done.key] = done.record_vector
            segments[done.key] = done.segment_vectors
        if self.prepare is not None:
            batch = _prepared_columns(batch["position"], reads)
        out = {k: v for k, v in batch.items() if k != "windows"}
        out["record_vector"] = records
        out["segment_vectors"] = segments
        return out

    def _read_ahead(self, batch: dict, reads: list) -> Iterator[tuple[int, np.ndarray]]:
        """Step 1 for this batch on a reader thread, ahead of the encoder (as `ecg-atlas embed`
        reads ahead): (row, windows) of each readable row, every row's `_Read` into `reads`."""
        rows = range(len(batch["position"]))
        work = partial(_read_row, batch, prepare=self.prepare, min_leads=self.min_leads,
                       pseudonymiser=self.pseudonymiser)
        for i, read in prefetch(rows, work, workers=1):
            if isinstance(read, Exception):  # _read_row turns every failure into a refusal
                raise read
            reads.append(read)
            if not read.reason:
                yield i, read.windows


# ---------------------------------------------------------------------------------------------
# The driver


def _fingerprint(inputs: Sequence[InputECG], shard_size: int, identity: dict,
                 pseudonymiser: PatientPseudonymiser | None) -> str:
    digest = hashlib.sha256()
    settings = {"shard_size": shard_size, "identity": identity}
    if pseudonymiser is not None:  # jobs without a key keep the fingerprint they had before keys
        settings["patient_key"] = pseudonymiser.key_fingerprint()
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for item in inputs:
        digest.update(json.dumps([item.ecg_id, item.path, item.row]).encode())
    return digest.hexdigest()


def _claim_folder(out: Path, fingerprint: str, n_inputs: int, shard_size: int) -> None:
    """Tie `out` to this job's input list: a re-run resumes it, another job is refused."""
    from ecg_atlas.atomic import write_atomic

    job_file = out / JOB_FILE
    if job_file.exists():
        saved = json.loads(job_file.read_text())
        if saved.get("fingerprint") != fingerprint:
            raise AtlasError(f"{out} holds shards of another job (other inputs, encoder, shard size or "
                             f"patient key); "
                             f"write to an empty folder, or re-run with the inputs and options it was made with")
        return
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob("shard-*.parquet")):
        raise AtlasError(f"{out} holds shard files but no {JOB_FILE}: write to an empty folder")
    meta = {"fingerprint": fingerprint, "inputs": n_inputs, "shard_size": shard_size}
    write_atomic(job_file, lambda tmp: Path(tmp).write_text(json.dumps(meta, indent=1)))


def _cluster_gpus(device: str) -> int:
    import ray

    if device == "cpu":
        return 0
    return int(ray.cluster_resources().get("GPU", 0))


def run_job(inputs: Sequence[InputECG], out: Path, options: JobOptions, *, address: str | None = None,
            progress: Callable[[int, int], None] | None = None) -> JobSummary:
    """Embed `inputs` into shards under `out` (module docstring). Connects to the Ray cluster at
    `address` (None: the one this process is attached to, else a new local one).

    progress: called on the driver as ``progress(done, total)`` while ECGs come back (``total``:
    the ECGs of the shards still to write); None (or False) reports nothing. Nothing is printed."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise AtlasError("--engine ray needs Ray Data: pip install 'ecg-atlas[ray]'") from None
    from ecg_atlas.embedder.resolver import load_encoder

    if options.shard_size < 1 or options.batch_size < 1:
        raise AtlasError("--shard-size and --batch-size must be at least 1")
    if not inputs:
        raise AtlasError("no ECGs to embed")
    counts = Counter(item.ecg_id for item in inputs)
    if len(counts) != len(inputs):
        twice = sorted(i for i, n in counts.items() if n > 1)[:5]
        raise AtlasError(f"the input names some ECG ids more than once ({', '.join(twice)}): give each ECG once")
    out = Path(out)
    started_here = not ray.is_initialized()
    if started_here:
        ray.init(address=address, log_to_driver=False, include_dashboard=False)
    try:
        # Identity (and a check that the checkpoint loads) before any work is sent out.
        probe = load_encoder(options.checkpoint, device="cpu", revision=options.revision,
                             expected_sha256=options.checkpoint_sha256)
        identity = encoder_identity(probe)
        dim, prepare = probe.dim, probe.preprocessing
        del probe
        fingerprint = _fingerprint(inputs, options.shard_size, identity, options.pseudonymiser)
        _claim_folder(out, fingerprint, len(inputs), options.shard_size)
        n_shards = math.ceil(len(inputs) / options.shard_size)
        todo = [s for s in range(n_shards) if not (out / SHARD_PATTERN.format(s)).exists()]
        gpus = _cluster_gpus(options.device)
        dtype = options.dtype or ("bfloat16" if gpus else "float32")
        if gpus:
            actors = options.concurrency or gpus
            per_actor = {"num_gpus": 1, "num_cpus": options.cpus_per_actor or 1}
            threads = options.cpus_per_actor
        else:
            cpus = int(ray.cluster_resources().get("CPU", 1))
            actors = options.concurrency or max(1, cpus // (options.cpus_per_actor or cpus))
            threads = options.cpus_per_actor or max(1, cpus // actors)
            per_actor = {"num_cpus": threads}
        summary = JobSummary(out=str(out), inputs=len(inputs), shards=n_shards, shards_skipped=n_shards - len(todo),
                             embedded=0, refused=0, refusal_reasons={}, duplicates_dropped=0, seconds=0.0,
                             ecgs_per_s=None, actors=actors, actor_device="cuda" if gpus else "cpu", dtype=dtype,
                             model_id=identity["model_id"], checkpoint_sha256=identity["checkpoint_sha256"], dim=dim)
        if todo:
            _embed_shards(inputs, todo, out, options, summary, identity=identity, fingerprint=fingerprint,
                          prepare=prepare, per_actor=per_actor, threads=threads,
                          progress=progress if callable(progress) else None)
        return summary
    finally:
        if started_here:
            ray.shutdown()


def _embed_shards(inputs, todo, out, options, summary, *, identity, fingerprint, prepare, per_actor,
                  threads, progress) -> None:
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # shards complete one after another: bounded memory
    context.enable_progress_bars = False
    size = options.shard_size
    rows = [{"position": p, "ecg_id": inputs[p].ecg_id, "path": inputs[p].path,
             "row": -1 if inputs[p].row is None else inputs[p].row}
            for s in todo for p in range(s * size, min((s + 1) * size, len(inputs)))]
    actors = summary.actors
    on_gpu = summary.actor_device == "cuda"
    if on_gpu:  # CPU read tasks of READ_BATCH ECGs feed the GPU actors
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // READ_BATCH, 32 * actors)))
        dataset = dataset.map_batches(read_and_prepare, batch_size=READ_BATCH, batch_format="numpy",
                                      fn_kwargs={"prepare": prepare, "min_leads": options.min_leads,
                                                 "pseudonymiser": options.pseudonymiser}, num_cpus=1)
    else:  # a block is one actor call, at least one per actor: few, full forward passes (one partial each)
        calls = math.ceil(len(rows) / max(options.batch_size, CPU_CALL_ECGS))
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows), max(calls, actors))))
    dataset = dataset.map_batches(
        EncoderActor, batch_size=options.batch_size if on_gpu else None, batch_format="numpy",
        fn_constructor_kwargs={"spec": options.checkpoint, "device": summary.actor_device, "dtype": summary.dtype,
                               "batch_size": options.batch_size, "threads": threads, "revision": options.revision,
                               "checkpoint_sha256": options.checkpoint_sha256,
                               "prepare": None if on_gpu else prepare, "min_leads": options.min_leads,
                               "pseudonymiser": None if on_gpu else options.pseudonymiser},
        compute=ray.data.ActorPoolStrategy(size=actors), **per_actor)
    pending: dict[int, dict[int, ShardItem]] = {}
    started = time.perf_counter()
    done = 0
    for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
        for i, position in enumerate(batch["position"].tolist()):
            shard = position // size
            items = pending.setdefault(shard, {})
            if position in items:
                summary.duplicates_dropped += 1
                continue
            items[position] = _item(inputs[position], batch, i)
            done += 1
            if len(items) == min(size, len(inputs) - shard * size):
                _finish_shard(out, shard, pending.pop(shard), summary, identity, fingerprint)
        if progress is not None:
            progress(done, len(rows))
    summary.seconds = round(time.perf_counter() - started, 2)
    written = summary.embedded + summary.refused
    summary.ecgs_per_s = round(written / summary.seconds, 2) if summary.seconds else None
    if pending:
        missing = sum(min(size, len(inputs) - s * size) - len(items) for s, items in pending.items())
        raise AtlasError(f"Ray returned no result for {missing} ECGs; re-run the same command to finish "
                         f"the {len(pending)} incomplete shards")


def _item(source: InputECG, batch: dict, i: int) -> ShardItem:
    reason = batch["reason"][i] or None
    file_metadata = pickle.loads(batch["file_metadata"][i])
    patient_id = source.patient_id if source.patient_id is not None else batch["file_patient"][i] or None
    item = ShardItem(ecg_id=source.ecg_id, source=source_uri(source.path, source.row),
                     patient_id=patient_id, metadata={**file_metadata, **source.metadata})
    if reason:
        item.reason, item.message = reason, batch["message"][i]
        return item
    item.fs, item.lead_names, item.duration_s = float(batch["fs"][i]), list(batch["lead_names"][i]), float(
        batch["duration_s"][i])
    item.record_vector, item.segment_vectors = batch["record_vector"][i], np.asarray(batch["segment_vectors"][i])
    return item


def _finish_shard(out: Path, shard: int, items: dict[int, ShardItem], summary: JobSummary, identity: dict,
                  fingerprint: str) -> None:
    ordered = [items[p] for p in sorted(items)]
    write_shard(out / SHARD_PATTERN.format(shard),
                shard_table(ordered, summary.dim, identity, shard=shard, job=fingerprint))
    for item in ordered:
        if item.reason is None:
            summary.embedded += 1
        else:
            summary.refused += 1
            summary.refusal_reasons[item.reason] = summary.refusal_reasons.get(item.reason, 0) + 1


def summary_dict(summary: JobSummary) -> dict:
    return asdict(summary)
