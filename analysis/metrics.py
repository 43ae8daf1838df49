"""AUROC and AUPRC with weights, and patient-level bootstrap confidence intervals.

Both metrics are computed for many weightings of the same (labels, scores) at once: the scores are
sorted once, and each bootstrap resample is a row of weights (how many times each ECG was drawn).
With integer weights the results equal scikit-learn's ``roc_auc_score`` and
``average_precision_score`` on the correspondingly repeated sample (tests check both).

* AUROC: trapezoidal area under the ROC curve over distinct score thresholds (ties count ½, as in
  the Mann–Whitney statistic).
* AUPRC: average precision, Σ (Rₖ − Rₖ₋₁) · Pₖ over distinct thresholds (scikit-learn's definition;
  no interpolation).

Resampling is over patients (``groups``), not ECGs: when a patient has several ECGs they are drawn
together, so the interval reflects how many independent patients the test set really holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

#: Resamples per chunk: bounds memory at chunk × n_test float64 values.
_CHUNK = 64


def _curves(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true / false positive weight at each distinct threshold, high to low: (B, T) each."""
    order = np.argsort(-scores, kind="stable")
    s = scores[order]
    last_of_tie = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    w = weights[:, order]
    pos = y[order] > 0.5
    tp = np.cumsum(np.where(pos, w, 0.0), axis=1)[:, last_of_tie]
    fp = np.cumsum(np.where(pos, 0.0, w), axis=1)[:, last_of_tie]
    return tp, fp


def auroc_auprc(y: np.ndarray, scores: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """AUROC and AUPRC of `scores` for binary `y`, per row of `weights` (B, n); NaN where undefined.

    Without weights: one value each (arrays of shape (1,)). Undefined = no positive or no negative
    weight in that row.
    """
    y = np.asarray(y, dtype=float)
    scores = np.asarray(scores, dtype=float)
    if weights is None:
        weights = np.ones((1, len(y)))
    weights = np.atleast_2d(np.asarray(weights, dtype=float))
    if len(y) == 0:
        nan = np.full(len(weights), np.nan)
        return nan, nan.copy()
    tp, fp = _curves(y, scores, weights)
    p, n = tp[:, -1], fp[:, -1]
    tp0 = np.concatenate([np.zeros((len(tp), 1)), tp], axis=1)
    fp0 = np.concatenate([np.zeros((len(fp), 1)), fp], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        area = (np.diff(fp0, axis=1) * (tp0[:, 1:] + tp0[:, :-1]) / 2).sum(axis=1)
        auroc = area / (p * n)
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        auprc = (np.diff(tp0, axis=1) * precision).sum(axis=1) / p
    undefined = (p <= 0) | (n <= 0)
    auroc[undefined] = np.nan
    auprc[undefined] = np.nan
    return auroc, auprc


#: Points kept per ROC / PR curve in a report (enough to draw it; the areas use every threshold).
CURVE_POINTS = 200


def curve_points(y: np.ndarray, scores: np.ndarray, max_points: int = CURVE_POINTS) -> dict | None:
    """The ROC (false / true positive rate) and precision-recall points of `scores` for binary `y`,
    one per distinct threshold from high to low (at most `max_points`, evenly picked, ends kept),
    each curve starting at its recall-0 end; None where undefined (no positive or no negative)."""
    y = np.asarray(y, dtype=float)
    scores = np.asarray(scores, dtype=float)
    if len(y) == 0:
        return None
    tp, fp = (c[0] for c in _curves(y, scores, np.ones((1, len(y)))))
    p, n = tp[-1], fp[-1]
    if p <= 0 or n <= 0:
        return None
    keep = np.unique(np.linspace(0, len(tp) - 1, min(len(tp), max_points)).round().astype(int))
    tp, fp = tp[keep], fp[keep]
    precision = tp / np.maximum(tp + fp, 1e-12)

    def points(values) -> list[float]:
        return [round(float(v), 4) for v in values]

    return {"roc": {"fpr": points(np.r_[0.0, fp / n]), "tpr": points(np.r_[0.0, tp / p])},
            "pr": {"recall": points(np.r_[0.0, tp / p]), "precision": points(np.r_[precision[0], precision])},
            "prevalence": round(float(p / (p + n)), 4)}


def auroc(y, scores) -> float:
    return float(auroc_auprc(y, scores)[0][0])


def auprc(y, scores) -> float:
    return float(auroc_auprc(y, scores)[1][0])


def bootstrap_weights(groups: np.ndarray, n_resamples: int, seed: int) -> Iterator[np.ndarray]:
    """Chunks of (b, n) weights: each row draws the *patients* with replacement, seeded.

    An ECG's weight is how often its patient was drawn, so a patient's ECGs move together.
    """
    _, codes = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    n_groups = int(codes.max()) + 1 if len(codes) else 0
    rng = np.random.default_rng(seed)
    done = 0
    while done < n_resamples:
        b = min(_CHUNK, n_resamples - done)
        drawn = rng.integers(0, n_groups, size=(b, n_groups))
        flat = (drawn + n_groups * np.arange(b)[:, None]).ravel()
        counts = np.bincount(flat, minlength=b * n_groups).reshape(b, n_groups)
        yield counts[:, codes].astype(float)
        done += b


@dataclass(frozen=True)
class Interval:
    """A point estimate with its bootstrap percentile interval (NaN when undefined)."""

    value: float
    low: float
    high: float
    resamples_used: int

    def to_dict(self) -> dict:
        return {"value": _clean(self.value), "ci_low": _clean(self.low), "ci_high": _clean(self.high),
                "resamples_used": self.resamples_used}

    def __str__(self) -> str:
        if np.isnan(self.value):
            return "n/a"
        return f"{self.value:.3f} [{self.low:.3f}, {self.high:.3f}]"


def _clean(x: float) -> float | None:
    return None if x is None or np.isnan(x) else round(float(x), 6)


def interval(value: float, draws: np.ndarray, level: float = 0.95) -> Interval:
    finite = draws[np.isfinite(draws)]
    if np.isnan(value) or len(finite) == 0:
        return Interval(float(value), np.nan, np.nan, int(len(finite)))
    alpha = (1 - level) / 2
    low, high = np.quantile(finite, [alpha, 1 - alpha])
    return Interval(float(value), float(low), float(high), int(len(finite)))


@dataclass(frozen=True)
class LabelMetrics:
    label: str
    n_positive: int
    n_negative: int
    auroc: Interval
    auprc: Interval
    #: ROC and PR points at the point estimate (``curve_points``), when asked for
    curves: dict | None = None


@dataclass(frozen=True)
class MetricSet:
    """Per-label metrics and the macro average over the labels in `macro_labels`."""

    labels: list[LabelMetrics]
    macro_auroc: Interval
    macro_auprc: Interval
    macro_labels: list[str]
    #: label -> why the macro average leaves it out (analysis.probe.count_flag: the one rule)
    left_out: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "labels": [{"label": m.label, "n_positive": m.n_positive, "n_negative": m.n_negative,
                        "auroc": m.auroc.to_dict(), "auprc": m.auprc.to_dict(),
                        **({"curves": m.curves} if m.curves is not None else {})} for m in self.labels],
            "macro": {"auroc": self.macro_auroc.to_dict(), "auprc": self.macro_auprc.to_dict(),
                      "labels": list(self.macro_labels), "left_out": dict(self.left_out)},
        }


def evaluate(y: np.ndarray, scores: np.ndarray, label_names: list[str], groups: np.ndarray, *,
             macro_labels: list[str] | None = None, n_resamples: int = 1000, seed: int = 0,
             level: float = 0.95, curves: bool = False) -> MetricSet:
    """Per-label and macro AUROC / AUPRC with patient-bootstrap CIs.

    y: (n, L) with 1 / 0 / NaN (unknown: left out for that label); scores: (n, L). Every label is
    measured on the same resamples, so the macro interval is the interval of the per-resample macro
    mean. `macro_labels` (default: all) are the labels the macro averages; the caller leaves out
    labels with too few positives rather than letting them blur the average. `curves`: keep each
    label's ROC / PR points too (``curve_points``), for a report to draw.
    """
    y = np.asarray(y, dtype=float)
    scores = np.asarray(scores, dtype=float)
    macro_labels = list(label_names) if macro_labels is None else list(macro_labels)
    known = ~np.isnan(y)
    point = np.array([auroc_auprc(y[known[:, j], j], scores[known[:, j], j]) for j in range(len(label_names))])
    point = point[:, :, 0] if len(label_names) else np.empty((0, 2))
    draws = np.full((2, len(label_names), n_resamples), np.nan)
    done = 0
    for weights in bootstrap_weights(groups, n_resamples, seed) if n_resamples else ():
        b = len(weights)
        for j in range(len(label_names)):
            k = known[:, j]
            a, p = auroc_auprc(y[k, j], scores[k, j], weights[:, k])
            draws[0, j, done:done + b] = a
            draws[1, j, done:done + b] = p
        done += b
    labels = []
    for j, name in enumerate(label_names):
        k = known[:, j]
        labels.append(LabelMetrics(name, int((y[k, j] > 0.5).sum()), int((y[k, j] <= 0.5).sum()),
                                   interval(point[j, 0], draws[0, j], level),
                                   interval(point[j, 1], draws[1, j], level),
                                   curve_points(y[k, j], scores[k, j]) if curves else None))
    idx = [label_names.index(m) for m in macro_labels]
    if idx:
        macro_point = point[idx].mean(axis=0)
        macro_draws = draws[:, idx].mean(axis=1)  # NaN when any macro label is undefined in a resample
    else:
        macro_point = np.full(2, np.nan)
        macro_draws = np.full((2, n_resamples), np.nan)
    return MetricSet(labels, interval(macro_point[0], macro_draws[0], level),
                     interval(macro_point[1], macro_draws[1], level), macro_labels)
