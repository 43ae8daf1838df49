"""The analysis verbs over a store, one function each: what the CLI runs and the RPCs will call.

* ``train_stored_probe`` — cohort → targets → patient-disjoint split → probe + report (+ random-init
  baseline) → saved in the store.
* ``evaluate_stored_probe`` — a saved probe on another (filtered) cohort, patients it was trained
  or tuned on left out.
* ``cluster_stored`` — cohort → (PCA) UMAP HDBSCAN → labels written back, enrichment, figures.
* ``explain_ecg`` — saliency of one ECG drawn over a lead.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ecg_atlas.atomic import write_atomic
from ecg_atlas.errors import AtlasError
from ecg_atlas.index.storage_errors import refused_writes

from . import ecg_paper, plots
from .cohort import CohortParams, CohortResult, Progress, run_cohort
from .enrichment import EnrichmentTable, enrichment
from .metrics import evaluate
from .probe import (
    DEFAULT_CS,
    DEFAULT_FRACTIONS,
    DEFAULT_MIN_POSITIVES,
    LinearProbe,
    ProbeReport,
    baseline_report,
    count_flag,
    cross_validate_probe,
    train_probe,
)
from .signals import SignalSource
from .splits import TEST, ColumnSplit, check_patient_disjoint, kfold_by_patient, patient_groups, split_by_patient
from .store_io import (
    Cohort,
    baseline_vectors,
    check_same_encoder,
    identity_dict,
    load_cohort,
    load_probe,
    probe_split,
    run_dir,
    save_cluster_run,
    save_probe,
)
from .targets import build_targets, spec_columns

log = logging.getLogger(__name__)
#: Legend / colour-bar titles for columns whose unit a reader needs.
UNITS = {"age": "age (years)"}


@dataclass(frozen=True)
class SplitSpec:
    """How to split: ``patient`` (random by patient), ``column:COLUMN[:train=..,val=..,test=..]``, or ``kfold:K``."""

    method: str = "patient"
    fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
    column: ColumnSplit | None = None
    k: int = 0

    @classmethod
    def parse(cls, text: str, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)) -> "SplitSpec":
        text = text.strip()
        if text == "patient":
            return cls("patient", fractions)
        if text.startswith("kfold:"):
            try:
                return cls("kfold", fractions, k=int(text.split(":", 1)[1]))
            except ValueError:
                raise AtlasError(f"split {text!r}: write kfold:K with an integer K, e.g. kfold:5") from None
        if text.startswith("column:"):
            return cls("column", fractions, column=ColumnSplit.parse(text.split(":", 1)[1]))
        raise AtlasError(f"split {text!r}: use 'patient', 'column:COLUMN[:train=1-8,val=9,test=10]' or 'kfold:K'")


@dataclass
class ProbeRun:
    probe: LinearProbe
    report: ProbeReport
    path: Path | None


def train_stored_probe(store, name: str | None, targets: Sequence[str], *, where: Sequence[str] = (),
                       split: SplitSpec = SplitSpec(), class_weight: str | None = None,
                       Cs: Sequence[float] = DEFAULT_CS,
                       n_bootstrap: int = 1000, seed: int = 0, min_positives: int = DEFAULT_MIN_POSITIVES,
                       fractions: Sequence[float] = DEFAULT_FRACTIONS, baseline_encoder=None,
                       ecg_paths: dict[str, str] | None = None, data_roots: Sequence[str] = (),
                       overwrite: bool = False, progress: Progress | None = None) -> ProbeRun:
    """Train (and save, when `name` is given) a probe on a filtered cohort of the store.

    baseline_encoder: a random-init encoder of the same architecture (``store_io.random_init_like``)
    to repeat the probe on its vectors; needs the raw ECGs (the store's signal copies, files under
    `data_roots`, or `ecg_paths`: analysis/signals.py). progress: called with (stage, percent of
    the run) as for ``cluster_stored``; embedding the baseline's ECGs is most of a baseline run.
    """
    stage = _ProbeStages(progress, baseline_encoder is not None)
    columns = spec_columns(targets) + ([split.column.column] if split.column else [])
    stage("training the probe", 0.0)
    cohort = load_cohort(store, where, columns)
    tg = build_targets(targets, cohort.metadata, cohort.column_types)
    keep = np.flatnonzero(tg.known_rows())
    if len(keep) < len(cohort):
        log.info("%d ECGs have no known label for these targets and are left out", len(cohort) - len(keep))
    cohort = _subset(cohort, keep)
    tg = tg.subset(keep)
    groups = cohort.groups
    common = dict(Cs=Cs, class_weight=class_weight, n_bootstrap=n_bootstrap, seed=seed, min_positives=min_positives)
    folds = None
    if split.method == "kfold":
        folds = kfold_by_patient(groups, split.k, tg.y, seed=seed)
        probe, report = cross_validate_probe(cohort.vectors, tg, groups, folds, **common)
        assignment = np.array([f"fold{f}" for f in folds], dtype=object)
        split_arr = None
    else:
        if split.method == "column":
            split_arr = split.column.assign(cohort.metadata[split.column.column], groups)
            method = f"column {split.column.column}"
        else:
            split_arr = split_by_patient(groups, tg.y, fractions=split.fractions, seed=seed)
            method = f"random by patient {split.fractions}, seed {seed}"
        check_patient_disjoint(split_arr, groups)
        probe, report = train_probe(cohort.vectors, tg, groups, split_arr, split_method=method, fractions=fractions,
                                    **common)
        assignment = split_arr
    if baseline_encoder is not None:
        stage.embedding(len(cohort))
        base = baseline_vectors(store, cohort, baseline_encoder, paths=ecg_paths, data_roots=data_roots,
                                on_ecg=stage.one_ecg)
        stage("training the baseline's probe", 90.0)
        report.baseline = baseline_report(base, tg, groups, split_arr, folds=folds, **common)
        report.baseline_model_id = baseline_encoder.model_id
    stage("trained", 100.0)
    path = None
    if name:
        meta = {"targets": list(targets), "where": cohort.where, "identity": identity_dict(cohort.identity),
                "embedding_set_hash": cohort.embedding_set_hash(), "n_ecgs": len(cohort),
                "n_patients": int(len(np.unique(groups.astype(str)))), "class_weight": class_weight,
                "min_positives": min_positives,
                "split": report.split, "report": report.to_dict()}
        with refused_writes("saving the probe"):
            path = save_probe(store, name, probe, meta, dict(zip(cohort.ecg_ids, assignment.tolist())),
                              overwrite=overwrite)
    return ProbeRun(probe, report, path)


class _ProbeStages:
    """(stage, percent) reports of a probe run: the probe 0–10 %, the baseline's ECGs 10–90 %, its
    probe 90–100 % (without a baseline the probe is the whole run)."""

    def __init__(self, progress: Progress | None, baseline: bool) -> None:
        self.progress, self.baseline = progress, baseline
        self.total = self.done = 0

    def __call__(self, stage: str, percent: float) -> None:
        if self.progress:
            self.progress(stage, percent)

    def embedding(self, total: int) -> None:
        self.total, self.done = total, 0
        self("embedding the ECGs with the random-init encoder", 10.0)

    def one_ecg(self) -> None:
        self.done += 1
        self("embedding the ECGs with the random-init encoder", 10.0 + 80.0 * self.done / max(self.total, 1))


def _subset(cohort: Cohort, rows: np.ndarray) -> Cohort:
    pick = rows.tolist()
    return Cohort([cohort.ecg_ids[i] for i in pick], cohort.vectors[rows], [cohort.patient_ids[i] for i in pick],
                  [cohort.sources[i] for i in pick], {k: [v[i] for i in pick] for k, v in cohort.metadata.items()},
                  cohort.column_types, cohort.identity, cohort.where)


def evaluation_flags(report: dict, evaluated: dict[str, tuple[int, int]]) -> dict[str, str]:
    """label -> why an evaluation's macro average leaves it out: the training rule (``count_flag``,
    with the probe's own ``min_positives``) applied to the probe's training counts and to the
    (positives, negatives) of the ECGs evaluated. `report`: the probe's saved report."""
    min_positives = int(report.get("min_positives") or DEFAULT_MIN_POSITIVES)
    trained = {c["label"]: (int(c["train_positive"]), int(c["train_negative"])) for c in report.get("counts", [])}
    flags = {}
    for label, here in evaluated.items():
        where = {"trained on": trained[label]} if label in trained else {}
        flag = count_flag(min_positives, **where, evaluated=here)
        if flag:
            flags[label] = flag
    return flags


def evaluate_stored_probe(store, name: str, *, where: Sequence[str] = (), n_bootstrap: int = 1000, seed: int = 0):
    """A saved probe's AUROC / AUPRC on a cohort, leaving out every patient it saw in training or tuning.

    The macro average follows the training rule (``evaluation_flags``): the metrics' ``left_out``
    says which labels it leaves out and why."""
    probe, meta = load_probe(store, name)
    check_same_encoder(store.info().identity, meta)
    cohort = load_cohort(store, where, spec_columns(meta["targets"]))
    tg = build_targets(meta["targets"], cohort.metadata, cohort.column_types)
    seen_ids = store_ids(store, [e for e, s in probe_split(store, name).items() if s != TEST])
    seen_rows = store.get(seen_ids, columns=["patient_id"]) if seen_ids else []
    seen_patients = set(patient_groups([r["patient_id"] for r in seen_rows], seen_ids).tolist())
    keep = np.array([g not in seen_patients for g in cohort.groups]) & tg.known_rows()
    if not keep.any():
        raise AtlasError("every ECG of this cohort belongs to a patient the probe was trained or tuned on")
    labels = [label for label in probe.labels if label in tg.labels]
    if labels != probe.labels:
        raise AtlasError(f"the cohort does not give the probe's labels ({', '.join(probe.labels)})")
    scores = probe.predict_proba(cohort.vectors[keep])
    # the probe's label order (a LIST:* target lists this cohort's labels by their frequency here)
    y = tg.y[keep][:, [tg.labels.index(label) for label in probe.labels]]
    positives = np.nansum(y, axis=0).astype(int)
    negatives = (~np.isnan(y)).sum(axis=0) - positives
    left_out = evaluation_flags(meta.get("report", {}), {label: (int(positives[j]), int(negatives[j]))
                                                         for j, label in enumerate(probe.labels)})
    metrics = evaluate(y, scores, probe.labels, cohort.groups[keep], n_resamples=n_bootstrap, seed=seed,
                       macro_labels=[label for label in probe.labels if label not in left_out])
    return replace(metrics, left_out=left_out), int(keep.sum()), int(len(cohort) - keep.sum())


def store_ids(store, ecg_ids) -> list[str]:
    """Those of `ecg_ids` still in the store (ECGs can be deleted after a probe was trained)."""
    from ecg_atlas.index import Term

    found = []
    wanted = sorted(ecg_ids)
    for start in range(0, len(wanted), 200):
        chunk = wanted[start:start + 200]
        for batch in store.iter_batches(filter=Term("ecg_id", "in", chunk), columns=["ecg_id"]):
            found.extend(batch.column("ecg_id").to_pylist())
    return found


# ---------------------------------------------------------------------------------------------
# Cohort runs


@dataclass
class ClusterRun:
    result: CohortResult
    enrichment: EnrichmentTable
    directory: Path
    figures: dict[str, Path]


def cluster_stored(store, run: str, *, where: Sequence[str] = (), params: CohortParams = CohortParams(),
                   label_columns: Sequence[str] = (), colour_by: Sequence[str] = (), exemplar_grid: bool = True,
                   progress: Progress | None = None, data_roots: Sequence[str] = ()) -> ClusterRun:
    """Cluster a filtered cohort, write the labels back, and write enrichment and figures.

    label_columns: label-list or boolean columns whose labels the enrichment table tests;
    colour_by: extra metadata columns to colour the map by. ``age`` and ``sex`` are used for the
    table when the store has them.
    """
    available = store.columns()
    extras = [c for c in ("age", "sex") if c in available]
    cohort = load_cohort(store, where, list(dict.fromkeys([*label_columns, *colour_by, *extras])))
    result = run_cohort(cohort.vectors, params, progress=progress)
    names, matrix = _label_matrix(cohort, label_columns)
    table = enrichment(result.labels, matrix, names, ages=cohort.metadata.get("age"), sexes=cohort.metadata.get("sex"))
    with refused_writes("saving the cluster run"):
        directory = save_cluster_run(store, run, cohort, result)
        write_atomic(directory / "enrichment.csv", lambda tmp: Path(tmp).write_text(table.to_csv()))
        write_atomic(directory / "enrichment.md", lambda tmp: Path(tmp).write_text(_named(table).to_markdown()))
        figures = _cluster_figures(store, run, cohort, result, directory, colour_by, exemplar_grid, data_roots)
    return ClusterRun(result, table, directory, figures)


def _cluster_figures(store, run: str, cohort, result, directory: Path, colour_by: Sequence[str],
                     exemplar_grid: bool, data_roots: Sequence[str]) -> dict:
    """The cluster run's maps (by cluster and by each `colour_by` column) and exemplar grids."""
    figures = {"map_cluster": plots.plot_map(result.map_2d, result.labels, directory / "map_cluster.png",
                                             kind="cluster",
                                             title=f"Cohort map '{run}': {len(cohort)} ECGs, {result.n_clusters} "
                                                   f"clusters (HDBSCAN), noise in grey")}
    for column in colour_by:
        values = cohort.metadata[column]
        col_type = cohort.column_types[column]
        kind = "numeric" if col_type in ("DOUBLE", "BIGINT", "INTEGER") else "category"
        if col_type == "VARCHAR[]":
            values = [None if v is None else (";".join(sorted(v)) or "none") for v in values]
        figures[f"map_{column}"] = plots.plot_map(result.map_2d, values, directory / f"map_{column}.png", kind=kind,
                                                  title=f"Cohort map '{run}' coloured by {column}",
                                                  colour_label=UNITS.get(column, column))
    if exemplar_grid:
        figures.update(_ecg_grids(SignalSource(store, data_roots), cohort, result, directory))
    return figures


def _named(table: EnrichmentTable) -> EnrichmentTable:
    """The table for people: SNOMED CT codes with their names (the CSV keeps the bare labels)."""
    from ecg_atlas.labels import label_display

    return EnrichmentTable(table.clusters, [replace(r, label=label_display(r.label)) for r in table.labels])


def _label_matrix(cohort: Cohort, label_columns: Sequence[str]) -> tuple[list[str], np.ndarray]:
    names: list[str] = []
    cols: list[np.ndarray] = []
    for column in label_columns:
        tg = build_targets([f"{column}:*" if cohort.column_types[column] == "VARCHAR[]" else column],
                           cohort.metadata, cohort.column_types)
        names += tg.labels
        cols.append(tg.y)
    matrix = np.column_stack(cols) if cols else np.empty((len(cohort), 0))
    return names, matrix


def _ecg_grids(signals: SignalSource, cohort: Cohort, result: CohortResult, directory: Path) -> dict[str, Path]:
    """Exemplars per cluster and the top outliers, lead II, when their signals can be had."""
    wanted = sorted({i for rows in result.exemplars.values() for i in rows} | set(result.outliers[:8]))
    recs = dict(zip(wanted, signals.recordings([cohort.ecg_ids[i] for i in wanted])))
    if not any(r is not None for r in recs.values()):
        log.info("no raw ECGs readable: exemplar and outlier grids skipped")
        return {}

    def traces(rows, caption):
        return [ecg_paper.trace_from_recording(recs[i], caption(i)) for i in rows if recs.get(i) is not None]

    grid_rows = [(f"cluster {c}", traces(rows, lambda i: f"{cohort.ecg_ids[i]} (p={result.probabilities[i]:.2f})"))
                 for c, rows in result.exemplars.items()]
    out = {}
    grid_rows = [r for r in grid_rows if r[1]]
    if grid_rows:
        out["exemplars"] = ecg_paper.plot_ecg_grid(grid_rows, directory / "exemplars.png",
                                                   title="Cluster exemplars (highest membership), lead II, first 5 s")
    outliers = traces(result.outliers[:8], lambda i: f"{cohort.ecg_ids[i]} (GLOSH {result.outlier_scores[i]:.2f})")
    if outliers:
        rows = [(f"outliers {k + 1}–{k + len(outliers[k:k + 4])}", outliers[k:k + 4])
                for k in range(0, len(outliers), 4)]
        out["outliers"] = ecg_paper.plot_ecg_grid(rows, directory / "outliers.png",
                                                  title="Top outliers (highest GLOSH score), lead II, first 5 s")
    return out


# ---------------------------------------------------------------------------------------------
# Explain


def explain_ecg(encoder, recording, out: str | Path, *, lead: str = "II", title: str = "",
                page: bool = True, token_saliency: np.ndarray | None = None) -> Path:
    """Saliency of `recording` under `encoder`, drawn over `lead` (whole 12-lead page by default).

    token_saliency: the (n_segments, T) ``encoder.saliency`` of the recording when the caller has
    it already (it is computed here otherwise)."""
    from ecg_atlas.embedder import preprocess

    if token_saliency is None:
        token_saliency = encoder.saliency(preprocess(recording))
    saliency = ecg_paper.saliency_to_samples(token_saliency)
    trace = ecg_paper.trace_from_recording(recording, title or f"ECG-FM attention saliency ({encoder.model_id})",
                                           saliency)
    if page:
        return ecg_paper.plot_ecg(trace, out, rhythm_lead=lead)
    index = ecg_paper.STANDARD_LEADS.index(lead)
    n = len(saliency)
    return ecg_paper.plot_saliency_lead(trace.signal[index, :n], saliency, out, lead=lead, title=trace.title)


__all__ = [
    "ClusterRun", "ProbeRun", "SplitSpec", "cluster_stored", "evaluate_stored_probe", "explain_ecg",
    "run_dir", "train_stored_probe",
]
