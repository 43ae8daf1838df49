"""A fine-tuned model judged beside the two baselines a reviewer asks for, on the same split.

* **fine-tuned**: record-level probabilities (the mean of each record's segment probabilities,
  ``train.predict_records``) on val and, when there is one, test;
* **frozen probe**: the base encoder's record vectors (``embedder.engine.record_vector``) under the
  probes' linear model (``analysis.probe.fit_probe``: trained on train, C chosen on val);
* **random init**: the same probe on a random-init twin of the base encoder
  (``encoder.random_twin(seed)``: same architecture and input contract).

Each is measured by ``analysis.metrics.evaluate`` (per label and macro AUROC / AUPRC with
patient-bootstrap 95 % CIs, the same resamples for all three). The macro average follows the
probes' one rule (``analysis.probe.count_flag``): a label with fewer than ``min_positives``
positives or negatives in train or in the part measured is left out, and ``left_out`` says so.

The verdict compares fine-tuned and frozen probe on val macro AUROC by a *paired* patient
bootstrap of their difference (both scored on each resample): fine-tuning "beats" the probe only
when that difference's 95 % CI lies above 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from ecg_atlas.analysis.metrics import Interval, MetricSet, auroc_auprc, bootstrap_weights, evaluate, interval
from ecg_atlas.analysis.probe import DEFAULT_MIN_POSITIVES, LinearProbe, Targets, count_flag, fit_probe
from ecg_atlas.analysis.splits import TEST, TRAIN, VAL

from .sources import one_hot
from .types import FinetuneData

log = logging.getLogger(__name__)

FINETUNED, FROZEN_PROBE, RANDOM_INIT = "finetuned", "frozen_probe", "random_init"
#: Windows per forward pass when embedding records for the baselines.
EMBED_BATCH = 64


@dataclass
class Evaluation:
    """Metrics per model and part ("val", "test"), the comparison, and the verdict."""

    #: model (FINETUNED / FROZEN_PROBE / RANDOM_INIT) -> part -> metrics
    metrics: dict[str, dict[str, MetricSet]]
    #: the paired difference fine-tuned − frozen probe in val macro AUROC (None: no macro label)
    difference: Interval | None
    verdict: str
    baselines: dict[str, dict] = field(default_factory=dict)  # model -> {"model_id", "C"}
    bootstrap: dict = field(default_factory=dict)
    min_positives: int = DEFAULT_MIN_POSITIVES

    @property
    def parts(self) -> list[str]:
        return list(self.metrics[FINETUNED])

    def model_metrics(self) -> dict:
        """The ``metrics`` dict saved in model.pt (and Info / ListProbes show)."""
        fine = self.metrics[FINETUNED]
        return {"val": fine[VAL].to_dict(), "test": fine[TEST].to_dict() if TEST in fine else None,
                "baselines": {name: {part: m.to_dict() for part, m in self.metrics[name].items()}
                              for name in (FROZEN_PROBE, RANDOM_INIT)},
                "verdict": self.verdict}

    def to_dict(self) -> dict:
        return {**self.model_metrics(),
                "difference_val_macro_auroc": None if self.difference is None else self.difference.to_dict(),
                "baseline_models": self.baselines, "bootstrap": self.bootstrap, "min_positives": self.min_positives}


def record_vectors(encoder, data: FinetuneData, *, batch_size: int = EMBED_BATCH,
                   on_batch: Callable[[int], None] | None = None) -> np.ndarray:
    """(R, D) record vectors of every record of `data` under `encoder` (the mean of its windows)."""
    from ecg_atlas.embedder import EmbeddingEngine
    from ecg_atlas.embedder.engine import record_vector

    vectors = EmbeddingEngine(encoder, batch_size=batch_size).embed_segments(data.segments, on_batch)
    order = np.argsort(data.segment_record, kind="stable")
    bounds = np.flatnonzero(np.diff(data.segment_record[order])) + 1
    out = np.stack([record_vector(vectors[rows]) for rows in np.split(order, bounds)])
    if len(out) != len(data.record_ids):
        raise ValueError("every record of the fine-tuning data must have at least one window")
    return out.astype(np.float32)


def probe_scores(vectors: np.ndarray, data: FinetuneData, parts: list[str]) -> tuple[LinearProbe, dict]:
    """The probes' linear model on `vectors` (train on train, C on val) and its scores per part."""
    targets = Targets(data.task, list(data.labels), one_hot(data))
    probe = fit_probe(vectors, targets, np.asarray(data.split, dtype=object))
    return probe, {part: probe.predict_proba(vectors[data.records_in(part)]) for part in parts}


def macro_flags(data: FinetuneData, part: str, min_positives: int) -> dict[str, str]:
    """label -> why the macro average of `part` leaves it out (the probes' rule, on train and `part`)."""
    y = one_hot(data)
    flags = {}
    for j, label in enumerate(data.labels):
        counts = {}
        for where in (TRAIN, part):
            col = y[data.records_in(where), j]
            col = col[~np.isnan(col)]
            counts[where] = (int((col > 0.5).sum()), int((col <= 0.5).sum()))
        flag = count_flag(min_positives, **counts)
        if flag:
            flags[label] = flag
    return flags


def measure(data: FinetuneData, part: str, scores: np.ndarray, *, min_positives: int, n_bootstrap: int,
            seed: int) -> MetricSet:
    """Per-label and macro AUROC / AUPRC of `scores` on `part`, with the macro rule applied."""
    rows = data.records_in(part)
    left_out = macro_flags(data, part, min_positives)
    metrics = evaluate(one_hot(data, rows), scores, list(data.labels), data.groups[rows],
                       macro_labels=[label for label in data.labels if label not in left_out],
                       n_resamples=n_bootstrap, seed=seed)
    return replace(metrics, left_out=left_out)


def paired_macro_difference(y: np.ndarray, a: np.ndarray, b: np.ndarray, groups: np.ndarray,
                            columns: list[int], *, n_resamples: int, seed: int) -> Interval:
    """Macro AUROC of `a` minus that of `b` over label `columns`, with a paired patient-bootstrap CI."""
    known = ~np.isnan(y)

    def macro(scores: np.ndarray, weights: np.ndarray | None) -> np.ndarray:
        per_label = [auroc_auprc(y[known[:, j], j], scores[known[:, j], j],
                                 None if weights is None else weights[:, known[:, j]])[0] for j in columns]
        return np.mean(per_label, axis=0)

    point = float(macro(a, None)[0] - macro(b, None)[0])
    draws = [macro(a, w) - macro(b, w) for w in bootstrap_weights(groups, n_resamples, seed)] if n_resamples else []
    return interval(point, np.concatenate(draws) if draws else np.array([]))


def verdict_line(fine: MetricSet, probe: MetricSet, difference: Interval | None) -> str:
    """One sentence: does fine-tuning beat the frozen probe on val macro AUROC, with the CIs."""
    if difference is None or np.isnan(difference.value):
        return ("no verdict: every label is left out of the val macro average (too few positives or negatives); "
                "see the per-label figures")
    figures = (f"fine-tuned {fine.macro_auroc} vs frozen probe {probe.macro_auroc}; paired difference "
               f"{difference.value:+.3f} [{difference.low:+.3f}, {difference.high:+.3f}] "
               f"over {len(fine.macro_labels)} label(s)")
    if difference.low > 0:
        return f"fine-tuning beats the frozen probe on val macro AUROC: {figures}"
    if difference.high < 0:
        return f"fine-tuning does not beat the frozen probe on val macro AUROC (it is worse): {figures}"
    return (f"fine-tuning does not beat the frozen probe on val macro AUROC (the difference's 95% CI includes 0): "
            f"{figures}")


def evaluate_run(data: FinetuneData, finetuned: dict[str, np.ndarray], base, *, twin_seed: int = 0,
                 min_positives: int = DEFAULT_MIN_POSITIVES, n_bootstrap: int = 1000, seed: int = 0,
                 on_event: Callable[[dict], None] | None = None) -> Evaluation:
    """Judge the fine-tuned scores (`finetuned`: part -> (R_part, L) record probabilities, in
    ``data.records_in(part)`` order) beside the frozen probe of `base` and of its random twin."""
    parts = [p for p in (VAL, TEST) if len(data.records_in(p))]
    missing = [p for p in parts if p not in finetuned]
    if missing:
        raise ValueError(f"fine-tuned scores missing for {missing}")
    common = dict(min_positives=min_positives, n_bootstrap=n_bootstrap, seed=seed)
    metrics = {FINETUNED: {p: measure(data, p, finetuned[p], **common) for p in parts}}
    scores = {FINETUNED: finetuned}
    baselines = {}
    for name, encoder in ((FROZEN_PROBE, base), (RANDOM_INIT, base.random_twin(seed=twin_seed))):
        if on_event is not None:
            on_event({"event": "baseline", "model": name, "records": len(data.record_ids)})
        probe, scores[name] = probe_scores(record_vectors(encoder, data), data, parts)
        metrics[name] = {p: measure(data, p, scores[name][p], **common) for p in parts}
        baselines[name] = {"model_id": encoder.model_id, "C": probe.C}
    fine_val, probe_val = metrics[FINETUNED][VAL], metrics[FROZEN_PROBE][VAL]
    columns = [list(data.labels).index(label) for label in fine_val.macro_labels]
    difference = None
    if columns:
        rows = data.records_in(VAL)
        difference = paired_macro_difference(one_hot(data, rows), finetuned[VAL], scores[FROZEN_PROBE][VAL],
                                             data.groups[rows], columns, n_resamples=n_bootstrap, seed=seed)
    verdict = verdict_line(fine_val, probe_val, difference)
    log.info(verdict)
    return Evaluation(metrics, difference, verdict, baselines,
                      {"resamples": n_bootstrap, "seed": seed, "unit": "patient", "level": 0.95}, min_positives)
