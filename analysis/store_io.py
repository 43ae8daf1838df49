"""The analysis layer's contact with the store: read cohorts, keep probes and cluster runs.

**Where results live.** The store's public API offers rows (``iter_batches``, ``get``) and user
metadata columns (``update_metadata``), but no place for analysis objects, and its DuckDB file
has one writer (the server) — a second connection could not even open it. So:

* cluster assignments go into the ECG rows as metadata columns ``cluster_<run>``,
  ``cluster_<run>_prob`` and ``cluster_<run>_outlier`` (searches filter on them:
  ``cluster_afib_map = 3``), through ``Store.update_metadata``;
* probes and run records are files under the store directory, ``<store>/analysis/``:
  ``probes/<name>/{probe.json, weights-<token>.npz, split-<token>.parquet}`` and
  ``cohorts/<run>/{run.json, assignments.parquet, enrichment.csv, enrichment.md, *.png}``.
  Every file is written with the store's `ecg_atlas.atomic.write_atomic` (temporary file, fsync,
  rename, directory fsync; ``probe.json`` / ``run.json`` last, as the commit point), so a reader
  never sees half a probe, and a saved one survives a crash. A probe's ``probe.json`` names its
  weights and split files (``files``; probes saved before that use ``weights.npz`` /
  ``split.parquet``), new files get a new token, and the previous probe's files go only after the
  new ``probe.json`` is in place: an overwrite that fails (a full disk, a crash) leaves the previous
  probe whole, never its record beside the new weights.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
import secrets
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ecg_atlas.atomic import write_atomic
from ecg_atlas.errors import AtlasError, EncoderMismatchError, NotFoundError
from ecg_atlas.index.schema import MAX_RESULT_NAME_LENGTH, name_rule
from ecg_atlas.index.storage_errors import refused_writes
from ecg_atlas.jsonable import jsonable

from .cohort import CohortResult, embedding_set_hash
from .probe import LinearProbe
from .signals import SignalSource
from .splits import patient_groups

log = logging.getLogger(__name__)

ANALYSIS_DIR = "analysis"
PROBES = "probes"
COHORTS = "cohorts"
BASELINES = "baselines"
_NAME_RE = name_rule(MAX_RESULT_NAME_LENGTH)
#: ECG-FM's notebook aggregates these labels over a record's segments by max, the rest by mean (spec §6).
HEAD_MAX_LABELS = frozenset({
    "Poor data quality", "Premature ventricular contraction", "Ventricular tachycardia",
    "Supraventricular tachycardia with aberrancy", "Electronic pacemaker",
})
HEAD_PROBE_NAME = "ecgfm-head"
#: the names Predict takes for the served encoder's own head: ``ecgfm-head`` and its neutral alias
#: ``head`` (any family's fine-tuned head: an ECG-FM fine-tuned checkpoint, a model.pt of ecg-atlas finetune)
HEAD_PROBE_NAMES = (HEAD_PROBE_NAME, "head")


def check_name(name: str, what: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise AtlasError(f"{what} name {name!r} must be lowercase letters, digits and '_', starting with a letter, "
                         f"at most {MAX_RESULT_NAME_LENGTH} characters (it becomes part of file and column names)")
    return name


def analysis_dir(store) -> Path:
    return Path(store.info().path) / ANALYSIS_DIR


def identity_dict(identity) -> dict:
    return asdict(identity)


# ---------------------------------------------------------------------------------------------
# Cohorts


@dataclass
class Cohort:
    """The ECGs a filter selects, with their record vectors and the metadata asked for."""

    ecg_ids: list[str]
    vectors: np.ndarray  # (n, D) float32, as stored
    patient_ids: list[str | None]
    sources: list[str | None]
    metadata: dict[str, list]
    column_types: dict[str, str]
    identity: object  # index.EncoderIdentity
    where: list[str]

    def __len__(self) -> int:
        return len(self.ecg_ids)

    @property
    def groups(self) -> np.ndarray:
        return patient_groups(self.patient_ids, self.ecg_ids)

    def embedding_set_hash(self) -> str:
        return embedding_set_hash(self.ecg_ids, self.vectors)


def load_cohort(store, where: Sequence[str] = (), columns: Sequence[str] = ()) -> Cohort:
    """Every stored ECG matching all `where` filters (``age>=60``, ``labels contains AF``...).

    `where` may also be a filter tree (``ecg_atlas.index.filters.Term`` / ``All`` / ``Any``)."""
    from ecg_atlas.index import parse_filter
    from ecg_atlas.index.filters import All, Any, Term

    info = store.info()
    if info.identity is None:
        raise AtlasError("the store is empty: ingest ECGs before analysing them")
    column_types = store.columns()
    wanted = ["patient_id", "source", *[c for c in columns if c not in ("patient_id", "source")]]
    missing = [c for c in wanted if c not in column_types]
    if missing:
        raise AtlasError(f"column(s) {', '.join(missing)} not in the store; columns: {', '.join(sorted(column_types))}")
    if isinstance(where, (Term, All, Any)):  # a structured filter tree (what the service receives)
        tree, where = where, [repr(where)]
    else:
        where = [where] if isinstance(where, str) else list(where)
        tree = parse_filter(where) if where else None
    ids: list[str] = []
    chunks: list[np.ndarray] = []
    meta: dict[str, list] = {c: [] for c in wanted}
    dim = info.identity.dim
    for batch in store.iter_batches(filter=tree, columns=wanted, with_vectors=True):
        ids.extend(batch.column("ecg_id").to_pylist())
        chunks.append(batch.column("record_vector").flatten().to_numpy(zero_copy_only=False).reshape(-1, dim))
        for c in wanted:
            meta[c].extend(batch.column(c).to_pylist())
    vectors = np.concatenate(chunks).astype(np.float32) if chunks else np.empty((0, dim), np.float32)
    log.info("cohort: %d ECGs", len(ids))
    return Cohort(ids, vectors, meta.pop("patient_id"), meta.pop("source"), meta, column_types, info.identity, where)


# ---------------------------------------------------------------------------------------------
# Raw ECGs (for the random-init baseline, exemplar grids and explain)


def random_init_like(encoder_or_config, seed: int = 0):
    """An encoder of the same ECG-FM architecture with random weights (no classifier head), from an
    encoder or its config (a store knows only its encoder's config): ``ecgfm.random_like``."""
    from ecg_atlas.embedder.encoders.ecgfm import random_like

    return random_like(getattr(encoder_or_config, "config", encoder_or_config), seed=seed)


def architecture_of(identity):
    """The ECG-FM config of a store's encoder, from its model id, when it is a known preset."""
    from ecg_atlas.embedder.model import PRESETS

    m = re.match(r"^random-init-([a-z]+)-seed\d+$", identity.model_id)
    if m and m.group(1) in PRESETS:
        return PRESETS[m.group(1)]
    m = re.search(r"-(\d+)x(\d+)$", identity.model_id)
    if m:
        for cfg in PRESETS.values():
            if (cfg.encoder_layers, cfg.embed_dim) == (int(m.group(1)), int(m.group(2))):
                return cfg
    raise AtlasError(f"cannot tell the architecture of {identity.model_id!r} from its id; pass the checkpoint "
                     f"(--checkpoint) so the baseline can copy its architecture")


def baseline_vectors(store, cohort: Cohort, baseline_encoder, *, paths: dict[str, str] | None = None,
                     data_roots: Sequence[str] = (), on_ecg: Callable[[], None] | None = None) -> np.ndarray:
    """Record vectors of the cohort's raw ECGs under `baseline_encoder`, cached in the store.

    Raises AtlasError naming how many raw ECGs could not be read (the comparison is only fair on
    the very same ECGs).
    """
    from ecg_atlas.embedder import EmbeddingEngine

    cache = analysis_dir(store) / BASELINES / f"{baseline_encoder.model_id}.npz"
    cached: dict[str, np.ndarray] = {}
    if cache.exists():
        with np.load(cache, allow_pickle=False) as f:
            cached = dict(zip(f["ecg_id"].tolist(), f["vectors"]))
    todo = [i for i, e in enumerate(cohort.ecg_ids) if e not in cached]
    recordings = SignalSource(store, data_roots, paths).recordings([cohort.ecg_ids[i] for i in todo])
    unreadable = sum(r is None for r in recordings)
    if unreadable:
        raise AtlasError(f"the random-init baseline needs the raw ECGs: {unreadable} of {len(cohort)} ECGs in this "
                         f"cohort have no signal kept in the store nor a file under a data root (or pass the "
                         f"ECG paths)")
    engine = EmbeddingEngine(baseline_encoder)

    def segments():
        for i, rec in zip(todo, recordings):
            yield cohort.ecg_ids[i], baseline_encoder.preprocess(rec)
            if on_ecg:
                on_ecg()

    for done in engine.embed_records(segments()):
        cached[done.key] = done.record_vector
    if todo:
        ids = sorted(cached)
        with refused_writes("saving the baseline vectors"):
            cache.parent.mkdir(parents=True, exist_ok=True)
            _write_npz(cache, ecg_id=np.array(ids), vectors=np.stack([cached[i] for i in ids]))
    return np.stack([cached[e] for e in cohort.ecg_ids]).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Probes


def _write_npz(path: Path, **arrays: np.ndarray) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:  # a file object: given a name, np.savez would append ".npz" to it
            np.savez(f, **arrays)

    write_atomic(path, write)


def _write_json(path: Path, obj: dict) -> None:
    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(jsonable(obj), f, indent=1)

    write_atomic(path, write)


def save_probe(store, name: str, probe: LinearProbe, meta: dict, split_ids: dict[str, str] | None = None, *,
               overwrite: bool = False) -> Path:
    """Keep a probe in ``<store>/analysis/probes/<name>/``; `meta` is its JSON record."""
    check_name(name, "probe")
    where = analysis_dir(store) / PROBES / name
    if (where / "probe.json").exists() and not overwrite:
        raise AtlasError(f"a probe named {name!r} exists; choose another name or overwrite it explicitly")
    where.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(4)
    files = {"weights": f"weights-{token}.npz"}
    if split_ids is not None:
        files["split"] = f"split-{token}.parquet"
    try:
        _write_npz(where / files["weights"], mean=probe.mean, scale=probe.scale, coef=probe.coef,
                   intercept=probe.intercept)
        if split_ids is not None:
            table = pa.table({"ecg_id": list(split_ids), "split": list(split_ids.values())})
            write_atomic(where / files["split"], lambda tmp: pq.write_table(table, tmp))
        created_at = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        record = {**meta, "name": name, "kind": probe.kind, "labels": probe.labels, "C": probe.C,
                  "trainable": probe.trainable, "created_at": created_at, "files": files}
        _write_json(where / "probe.json", record)  # the commit point
    except BaseException:
        for written in files.values():
            (where / written).unlink(missing_ok=True)
        raise
    for old in where.iterdir():  # the previous probe's files, now named by no record
        if old.name.startswith(("weights", "split")) and old.name not in files.values():
            old.unlink(missing_ok=True)
    log.info("probe saved (%d labels)", len(probe.labels))
    return where


def _probe_file(where: Path, meta: dict, kind: str) -> Path | None:
    """The file of `kind` ("weights", "split") that a probe's record names (None: it has none)."""
    if "files" in meta:
        name = meta["files"].get(kind)
        return None if name is None else where / name
    legacy = where / {"weights": "weights.npz", "split": "split.parquet"}[kind]
    return legacy if kind == "weights" or legacy.exists() else None


def load_probe(store, name: str) -> tuple[LinearProbe, dict]:
    where = analysis_dir(store) / PROBES / check_name(name, "probe")
    if not (where / "probe.json").exists():
        known = ", ".join(p["name"] for p in list_probes(store)) or "none"
        raise NotFoundError(f"no probe named {name!r} in this store (probes: {known})")
    meta = json.loads((where / "probe.json").read_text())
    with np.load(_probe_file(where, meta, "weights")) as w:
        probe = LinearProbe(meta["kind"], meta["labels"], w["mean"], w["scale"], w["coef"], w["intercept"],
                            meta["C"], meta["trainable"])
    return probe, meta


def probe_split(store, name: str) -> dict[str, str]:
    where = analysis_dir(store) / PROBES / check_name(name, "probe")
    if not (where / "probe.json").exists():
        return {}
    path = _probe_file(where, json.loads((where / "probe.json").read_text()), "split")
    if path is None:
        return {}
    t = pq.read_table(path)
    return dict(zip(t.column("ecg_id").to_pylist(), t.column("split").to_pylist()))


def list_probes(store) -> list[dict]:
    root = analysis_dir(store) / PROBES
    out = []
    for path in sorted(root.glob("*/probe.json")) if root.exists() else []:
        meta = json.loads(path.read_text())
        macro = meta.get("report", {}).get("test", {}).get("macro", {})
        out.append({"name": meta["name"], "kind": meta["kind"], "labels": meta["labels"],
                    "model_id": meta.get("identity", {}).get("model_id"), "created_at": meta.get("created_at"),
                    "macro_auroc": (macro.get("auroc") or {}).get("value"), "where": meta.get("where", []),
                    "report": meta.get("report", {})})
    return out


def check_same_encoder(store_identity, probe_meta: dict) -> None:
    want = probe_meta.get("identity", {})
    have = identity_dict(store_identity)
    if want != have:
        raise EncoderMismatchError(
            f"probe {probe_meta.get('name')!r} was trained on vectors of {want.get('model_id')!r} "
            f"(sha256 {str(want.get('checkpoint_sha256'))[:12]}…); these vectors come from {have.get('model_id')!r} "
            f"(sha256 {str(have.get('checkpoint_sha256'))[:12]}…). A probe only reads vectors of its own encoder")


def predict_stored(store, probe: LinearProbe, meta: dict, ecg_ids: Sequence[str]) -> np.ndarray:
    """(n, L) probabilities for stored ECGs (NotFoundError names the ids the store lacks)."""
    check_same_encoder(store.info().identity, meta)
    rows = store.get(list(ecg_ids), columns=["record_vector"])
    return probe.predict_proba(np.stack([r["record_vector"] for r in rows]))


@dataclass
class HeadProbe:
    """The served encoder's own classifier as a probe (the built-in ``head`` / ``ecgfm-head``): a
    finetuned ECG-FM checkpoint's head, or the head of a model.pt of ``ecg-atlas finetune``.

    It reads *segment* vectors: the head is applied to each segment's pooled embedding and the
    probabilities (sigmoid; softmax for a multi-class fine-tuned head) are aggregated per record:
    an ECG-FM checkpoint's as ECG-FM's notebook does (max for the labels in ``HEAD_MAX_LABELS``,
    mean for the others), a fine-tuned model.pt's by the mean, as it was trained and evaluated.
    Given only a record vector it applies the head to that mean vector.
    """

    labels: list[str]
    weight: np.ndarray  # (L, D)
    bias: np.ndarray  # (L,)
    identity: dict
    activation: str = "sigmoid"  # or "softmax"
    max_labels: frozenset = HEAD_MAX_LABELS

    @classmethod
    def from_encoder(cls, encoder) -> "HeadProbe":
        if not encoder.can_classify:
            raise AtlasError("the built-in head probe needs a finetuned encoder with a classifier head (a "
                             "finetuned ECG-FM checkpoint, or a model.pt of ecg-atlas finetune)")
        proj = encoder.head
        identity = {"model_id": encoder.model_id, "checkpoint_sha256": encoder.checkpoint_sha256,
                    "preprocessing_version": encoder.contract.preprocessing_version, "dim": encoder.dim}
        return cls(list(encoder.label_names), proj.weight.detach().float().cpu().numpy().astype(np.float64),
                   proj.bias.detach().float().cpu().numpy().astype(np.float64), identity,
                   activation=encoder.head_activation,
                   max_labels=frozenset() if encoder.finetuned is not None else HEAD_MAX_LABELS)

    def predict_segments(self, segment_vectors: Sequence[np.ndarray]) -> np.ndarray:
        """(n_records, L) from each record's (n_segments, D) segment vectors."""
        from scipy.special import expit, softmax

        use_max = np.array([label in self.max_labels for label in self.labels])
        out = []
        for seg in segment_vectors:
            logits = np.asarray(seg, dtype=np.float64) @ self.weight.T + self.bias
            p = softmax(logits, axis=-1) if self.activation == "softmax" else expit(logits)
            out.append(np.where(use_max, p.max(axis=0), p.mean(axis=0)))
        return np.array(out).reshape(len(out), len(self.labels))

    def predict_stored(self, store, ecg_ids: Sequence[str]) -> np.ndarray:
        have = identity_dict(store.info().identity)
        if have != self.identity:
            raise EncoderMismatchError(f"the loaded finetuned checkpoint ({self.identity['model_id']}) did not make "
                                       f"this store's vectors ({have['model_id']}); its head cannot read them")
        rows = store.get(list(ecg_ids), columns=["record_vector", "segment_vectors"])
        return self.predict_segments([r["segment_vectors"] if r["segment_vectors"] is not None
                                      else r["record_vector"][None, :] for r in rows])


# ---------------------------------------------------------------------------------------------
# Cluster runs


def cluster_columns(run: str) -> tuple[str, str, str]:
    check_name(run, "cluster run")
    return f"cluster_{run}", f"cluster_{run}_prob", f"cluster_{run}_outlier"


def run_dir(store, run: str) -> Path:
    return analysis_dir(store) / COHORTS / check_name(run, "cluster run")


def save_cluster_run(store, run: str, cohort: Cohort, result: CohortResult, extra: dict | None = None) -> Path:
    """Write cluster labels into the ECG rows and the run record beside the store.

    ECGs that carried this run's columns from an earlier run but are not in this cohort are
    cleared, so a search on ``cluster_<run>`` sees exactly this run.
    """
    from ecg_atlas.index import parse_filter

    col, prob_col, out_col = cluster_columns(run)
    updates = {
        e: {col: int(c), prob_col: float(p), out_col: float(o)}
        for e, c, p, o in zip(cohort.ecg_ids, result.labels, result.probabilities, result.outlier_scores)
    }
    if col in store.columns():
        members = set(cohort.ecg_ids)
        for batch in store.iter_batches(filter=parse_filter(f"{col} is not null"), columns=["ecg_id"]):
            for e in batch.column("ecg_id").to_pylist():
                if e not in members:
                    updates[e] = {col: None, prob_col: None, out_col: None}
    store.update_metadata(updates)
    where = run_dir(store, run)
    where.mkdir(parents=True, exist_ok=True)
    table = pa.table({
        "ecg_id": cohort.ecg_ids, "cluster": result.labels.astype(np.int64),
        "probability": result.probabilities, "outlier_score": result.outlier_scores,
        "map_x": result.map_2d[:, 0], "map_y": result.map_2d[:, 1],
    })
    write_atomic(where / "assignments.parquet", lambda tmp: pq.write_table(table, tmp))
    record = {
        "run": run, "columns": [col, prob_col, out_col], "where": cohort.where, "n_ecgs": len(cohort),
        "identity": identity_dict(cohort.identity), "embedding_set_hash": cohort.embedding_set_hash(),
        "params": result.params, "backend": result.backend, "timings_s": result.timings,
        "trustworthiness_2d": result.trustworthiness, "sizes": {str(k): v for k, v in result.sizes().items()},
        "exemplars": {str(c): [cohort.ecg_ids[i] for i in rows] for c, rows in result.exemplars.items()},
        "outliers": [{"ecg_id": cohort.ecg_ids[i], "outlier_score": float(result.outlier_scores[i])}
                     for i in result.outliers],
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    _write_json(where / "run.json", record)
    return where


def list_cluster_runs(store) -> list[dict]:
    """The run records (run.json) of every cluster run kept in the store, by name."""
    root = analysis_dir(store) / COHORTS
    return [json.loads(p.read_text()) for p in sorted(root.glob("*/run.json"))] if root.exists() else []


def load_cluster_run(store, run: str) -> dict:
    path = run_dir(store, run) / "run.json"
    if not path.exists():
        raise NotFoundError(f"no cluster run named {run!r} in this store")
    return json.loads(path.read_text())
