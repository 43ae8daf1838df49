"""Per-cluster enrichment: which labels are over- or under-represented in a cluster.

For every (cluster, label) the 2 × 2 table of ECGs in / out of the cluster × label present /
absent (ECGs whose label is unknown are left out of that label's table):

* prevalence in and out of the cluster;
* odds ratio ``(a·d) / (b·c)`` — the sample odds ratio, as ``scipy.stats.fisher_exact`` reports it
  (``inf`` when b·c = 0 and a·d > 0; ``NaN`` when both are 0);
* two-sided Fisher exact p-value, and the Benjamini–Hochberg q-value over every test in the
  table (all clusters, noise included, all labels).

Plus, per cluster: size, age median and interquartile range, and the sex mix.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.stats import fisher_exact

NOISE = -1


def benjamini_hochberg(p_values: Sequence[float]) -> np.ndarray:
    """BH-adjusted q-values (step-up, monotone, capped at 1); NaN p-values stay NaN and are not counted."""
    p = np.asarray(p_values, dtype=float)
    q = np.full(p.shape, np.nan)
    ok = np.flatnonzero(~np.isnan(p))
    m = len(ok)
    if m == 0:
        return q
    order = ok[np.argsort(p[ok], kind="stable")]
    ranked = p[order] * m / np.arange(1, m + 1)
    q[order] = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    return q


@dataclass(frozen=True)
class LabelEnrichment:
    cluster: int
    label: str
    positive_in: int
    n_in: int
    positive_out: int
    n_out: int
    prevalence_in: float
    prevalence_out: float
    odds_ratio: float
    p_value: float
    q_value: float


@dataclass(frozen=True)
class ClusterSummary:
    cluster: int
    size: int
    age_median: float | None
    age_q1: float | None
    age_q3: float | None
    age_known: int
    female: int
    male: int
    sex_unknown: int


@dataclass
class EnrichmentTable:
    clusters: list[ClusterSummary]
    labels: list[LabelEnrichment]

    def to_csv(self) -> str:
        """Long format: one row per (cluster, label), the cluster's summary repeated on each."""
        by_cluster = {c.cluster: c for c in self.clusters}
        out = io.StringIO()
        fields = list(ClusterSummary.__dataclass_fields__) + [f for f in LabelEnrichment.__dataclass_fields__
                                                             if f != "cluster"]
        writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
        writer.writeheader()
        for row in self.labels:
            writer.writerow({**asdict(by_cluster[row.cluster]), **{k: _fmt(v) for k, v in asdict(row).items()}})
        if not self.labels:
            for c in self.clusters:
                writer.writerow(asdict(c))
        return out.getvalue()

    def to_markdown(self, q_threshold: float = 0.05) -> str:
        """Cluster summaries, then the labels with q below the threshold, most significant first."""
        lines = ["| cluster | size | age median [IQR] (n) | female / male / unknown |", "|---|---:|---|---|"]
        for c in self.clusters:
            age = "n/a" if c.age_median is None else f"{c.age_median:g} [{c.age_q1:g}–{c.age_q3:g}] ({c.age_known})"
            lines.append(f"| {_name(c.cluster)} | {c.size} | {age} | {c.female} / {c.male} / {c.sex_unknown} |")
        significant = sorted((r for r in self.labels if not math.isnan(r.q_value) and r.q_value < q_threshold),
                             key=lambda r: (r.q_value, r.cluster, r.label))
        lines += ["", f"Labels enriched or depleted at BH q < {q_threshold:g} (Fisher exact, two-sided):", ""]
        if not significant:
            lines.append("_none_")
            return "\n".join(lines) + "\n"
        lines += ["| cluster | label | in cluster | outside | odds ratio | p | q |", "|---|---|---|---|---:|---:|---:|"]
        for r in significant:
            lines.append(f"| {_name(r.cluster)} | {r.label} | {r.positive_in}/{r.n_in} ({r.prevalence_in:.0%}) | "
                         f"{r.positive_out}/{r.n_out} ({r.prevalence_out:.0%}) | {r.odds_ratio:.2f} | "
                         f"{r.p_value:.2g} | {r.q_value:.2g} |")
        return "\n".join(lines) + "\n"


def _name(cluster: int) -> str:
    return "noise" if cluster == NOISE else str(cluster)


def _fmt(value: object) -> object:
    if isinstance(value, float):
        return "" if math.isnan(value) else ("inf" if math.isinf(value) else f"{value:.6g}")
    return value


def enrichment(clusters: np.ndarray, label_matrix: np.ndarray, label_names: Sequence[str], *,
               ages: Sequence[float | None] | None = None,
               sexes: Sequence[str | None] | None = None) -> EnrichmentTable:
    """Enrichment of each label in each cluster (noise, −1, included as its own group).

    label_matrix: (n, L) with 1 / 0 and NaN for unknown. ages: years or None; sexes: "F" / "M"
    (any case, or "female" / "male") or None.
    """
    clusters = np.asarray(clusters)
    y = np.asarray(label_matrix, dtype=float).reshape(len(clusters), -1)
    n = len(clusters)
    groups = sorted(int(c) for c in np.unique(clusters))
    ages_arr = np.array([np.nan if a is None else float(a) for a in (ages if ages is not None else [None] * n)])
    sex = [_sex(s) for s in (sexes if sexes is not None else [None] * n)]
    summaries = []
    rows = []
    for c in groups:
        inside = clusters == c
        a = ages_arr[inside & ~np.isnan(ages_arr)]
        q1, med, q3 = (np.percentile(a, [25, 50, 75]) if len(a) else (None, None, None))
        members = [s for s, i in zip(sex, inside) if i]
        summaries.append(ClusterSummary(c, int(inside.sum()), _num(med), _num(q1), _num(q3), int(len(a)),
                                        members.count("F"), members.count("M"), members.count(None)))
        for j, label in enumerate(label_names):
            known = ~np.isnan(y[:, j])
            pos = known & (y[:, j] > 0.5)
            a_ = int((inside & pos).sum())
            n_in = int((inside & known).sum())
            c_ = int((~inside & pos).sum())
            n_out = int((~inside & known).sum())
            b_, d_ = n_in - a_, n_out - c_
            if n_in == 0 or n_out == 0:
                odds, p = math.nan, math.nan
            else:
                odds = _odds_ratio(a_, b_, c_, d_)
                p = float(fisher_exact([[a_, b_], [c_, d_]], alternative="two-sided").pvalue)
            rows.append([c, label, a_, n_in, c_, n_out, a_ / n_in if n_in else math.nan,
                         c_ / n_out if n_out else math.nan, odds, p])
    q = benjamini_hochberg([r[-1] for r in rows])
    labels = [LabelEnrichment(*r, float(qv)) for r, qv in zip(rows, q)]
    return EnrichmentTable(summaries, labels)


def _odds_ratio(a: int, b: int, c: int, d: int) -> float:
    num, den = a * d, b * c
    if den == 0:
        return math.inf if num > 0 else math.nan
    return num / den


def _num(x) -> float | None:
    return None if x is None else round(float(x), 2)


def _sex(value: str | None) -> str | None:
    if not value:
        return None
    v = str(value).strip().lower()
    if v in ("f", "female", "w", "woman"):
        return "F"
    if v in ("m", "male", "man"):
        return "M"
    return None
