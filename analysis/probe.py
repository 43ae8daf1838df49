"""Linear probes on record vectors: L2-regularised logistic regression on standardised embeddings.

Array in, report out; the store is not touched here (``store_io`` does that).

* **Model.** Standardise each embedding dimension on the training ECGs, then logistic regression
  with an L2 penalty and an unpenalised intercept, scikit-learn's objective exactly:
  ``C · Σᵢ sᵢ · loss(xᵢ, yᵢ) + ½‖w‖²`` (sᵢ = class weight; ``class_weight="balanced"`` gives each
  class the same total weight). Binary and multi-label probes are one sigmoid per label; a
  multi-class probe is one softmax (multinomial) model.
* **Regularisation** is picked on the validation split from ``DEFAULT_CS``, per label (per probe
  for multi-class), by validation AUPRC (the criterion ECG-FM's own linear probe uses to pick its
  checkpoint, ecgfm_spec.md §9); ties go to the smaller C (stronger regularisation).
* **Solver.** All labels and all C values are solved together by preconditioned L-BFGS in
  PyTorch (``fit_path``). The problems are independent, so their summed objective has the same
  minimiser as each one alone; the point of batching is that one pass over the (n × D) data
  serves every label and every C. Solutions match scikit-learn's ``LogisticRegression`` (tests
  check it).
* **Evaluation** on the test split: per label and macro AUROC / AUPRC with patient-bootstrap 95 %
  CIs (``metrics``). Labels with fewer than ``min_positives`` positives (or negatives) in training
  or test are *flagged* and left out of the macro average, never silently averaged in.
* **Label-fraction curve**: the same probe trained on a random 1 %, 10 %, 100 % of the training
  *patients* (C re-picked on the same validation split), evaluated on the same test split.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from ecg_atlas.errors import AtlasError

from .metrics import MetricSet, auroc_auprc, evaluate
from .splits import TEST, TRAIN, VAL, fold_split

log = logging.getLogger(__name__)

BINARY, MULTILABEL, MULTICLASS = "binary", "multilabel", "multiclass"
DEFAULT_CS: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0)
DEFAULT_FRACTIONS: tuple[float, ...] = (0.01, 0.1, 1.0)
#: A label needs this many positives (and negatives) in training and in test to enter the macro.
DEFAULT_MIN_POSITIVES = 10
#: L-BFGS stops when the largest gradient entry of the (per-ECG mean) objective is below this.
GRAD_TOL = 1e-5
MAX_ITER = 500
#: Below this many input values (ECGs × dimensions) a fit runs on one thread.
SMALL_PROBLEM = 2_000_000


@dataclass
class Targets:
    """What a probe predicts. ``y`` is (n, L): 1 / 0, NaN where the label is unknown for an ECG.

    For a multi-class target, the L columns are the classes (one-hot rows; a row of NaN = unknown).
    """

    kind: str
    labels: list[str]
    y: np.ndarray

    def __post_init__(self) -> None:
        self.y = np.asarray(self.y, dtype=float)
        if self.y.ndim != 2 or self.y.shape[1] != len(self.labels):
            raise ValueError(f"targets y must be (n, {len(self.labels)}), got {self.y.shape}")
        if self.kind not in (BINARY, MULTILABEL, MULTICLASS):
            raise ValueError(f"unknown probe kind {self.kind!r}")

    def subset(self, rows: np.ndarray) -> "Targets":
        return Targets(self.kind, self.labels, self.y[rows])

    def known_rows(self) -> np.ndarray:
        """Rows with at least one known label (multi-class: a known class)."""
        return ~np.isnan(self.y).all(axis=1)


@dataclass
class LinearProbe:
    """A trained probe: standardisation, weights and the C chosen for each label."""

    kind: str
    labels: list[str]
    mean: np.ndarray  # (D,)
    scale: np.ndarray  # (D,)
    coef: np.ndarray  # (L, D) on standardised inputs
    intercept: np.ndarray  # (L,)
    C: list[float]
    trainable: list[bool]  # False: the training data had one class only; scores are constant

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def decision_function(self, vectors: np.ndarray) -> np.ndarray:
        x = (np.asarray(vectors, dtype=np.float64) - self.mean) / self.scale
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise AtlasError(f"this probe takes {self.dim}-d vectors; got shape {np.shape(vectors)}")
        return x @ self.coef.T + self.intercept

    def predict_proba(self, vectors: np.ndarray) -> np.ndarray:
        """(n, L) probabilities: per-label sigmoids, or the softmax over classes (multi-class)."""
        z = self.decision_function(vectors)
        if self.kind == MULTICLASS:
            z = z - z.max(axis=1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(axis=1, keepdims=True)
        return 1.0 / (1.0 + np.exp(-z))


# ---------------------------------------------------------------------------------------------
# Fitting


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = x.mean(axis=0, dtype=np.float64)
    scale = x.std(axis=0, dtype=np.float64)
    scale[scale == 0] = 1.0  # a constant dimension carries nothing; leave it at zero
    return mean, scale


def _class_weights(y: np.ndarray, kind: str, balanced: bool) -> np.ndarray:
    """(n, L) sample weights: 0 where the label is unknown; 'balanced' as scikit-learn defines it."""
    known = ~np.isnan(y)
    w = known.astype(np.float64)
    if not balanced:
        return w
    if kind == MULTICLASS:
        rows = known.all(axis=1)
        counts = np.nansum(y[rows], axis=0)
        cls = np.argmax(np.nan_to_num(y), axis=1)
        per_class = np.where(counts > 0, rows.sum() / (len(counts) * np.maximum(counts, 1)), 0.0)
        return np.where(rows[:, None], per_class[cls][:, None], 0.0) * np.ones_like(w)
    pos = np.nansum(y, axis=0)
    neg = known.sum(axis=0) - pos
    n = known.sum(axis=0)
    w_pos = np.where(pos > 0, n / (2 * np.maximum(pos, 1)), 0.0)
    w_neg = np.where(neg > 0, n / (2 * np.maximum(neg, 1)), 0.0)
    return np.where(known, np.where(y > 0.5, w_pos, w_neg), 0.0)


def _lbfgs(params: list[torch.Tensor], objective, max_iter: int) -> int:
    opt = torch.optim.LBFGS(params, lr=1.0, max_iter=max_iter, history_size=20, tolerance_grad=GRAD_TOL,
                            tolerance_change=1e-12, line_search_fn="strong_wolfe")
    evaluations = [0]

    def closure():
        opt.zero_grad()
        loss = objective()
        loss.backward()
        evaluations[0] += 1
        return loss

    opt.step(closure)
    return evaluations[0]


def fit_path(x: np.ndarray, y: np.ndarray, kind: str, Cs: Sequence[float], *, balanced: bool = False,
             max_iter: int = MAX_ITER) -> list[tuple[np.ndarray, np.ndarray]]:
    """(coef (L, D), intercept (L,)) for each C in `Cs` on already-standardised `x`.

    y: (n, L) 1 / 0 / NaN (multi-class: one-hot). Labels with a single class in `y` get zero
    weights and the intercept of their observed rate (the caller marks them untrainable).

    Embeddings are strongly anisotropic (a few directions hold most of the variance), which makes
    plain L-BFGS crawl. The L2 penalty is rotation-invariant, so the problem is solved in the
    eigenbasis of XᵀX/n and preconditioned there: with eigenvalues s and penalty curvature
    λ = 1/(C·n), the weights are w = u / √(s/4 + λ), which makes the Hessian's bound (Böhning's
    XᵀX/4n + λI) the identity in u. The answer is the same minimiser; it just takes tens of
    iterations instead of hundreds.
    """
    n, d = x.shape
    n_out, n_c = y.shape[1], len(Cs)
    sample_w = _class_weights(y, kind, balanced)
    if kind == MULTICLASS:
        rows = ~np.isnan(y).any(axis=1)
        target = torch.from_numpy(np.argmax(np.nan_to_num(y), axis=1))[:, None].expand(n, n_c)
        sw = torch.from_numpy(np.where(rows, sample_w[:, 0], 0.0))[:, None]
        prior = np.nansum(y[rows], axis=0) + 1.0
        b0 = np.log(prior / prior.sum())
    else:
        target = torch.from_numpy(np.tile(np.nan_to_num(y), (1, n_c)))
        sw = torch.from_numpy(np.tile(sample_w, (1, n_c)))
        pos = (np.nan_to_num(y) * (sample_w > 0)).sum(axis=0)
        tot = (sample_w > 0).sum(axis=0)
        rate = np.clip((pos + 0.5) / (tot + 1.0), 1e-6, 1 - 1e-6)
        b0 = np.log(rate / (1 - rate))
    # Column j·n_out + l is label (or class) l at C = Cs[j]: every C is solved in the same pass
    # over the data, which is what the time goes on (the products are memory-bound).
    lam = torch.from_numpy(np.repeat(1.0 / (np.asarray(Cs, dtype=float) * n), n_out))
    with _threads_for(n * d):
        x_t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        eigval, eigvec = torch.linalg.eigh((x_t.T @ x_t).double() / n)
        x_rot = x_t @ eigvec.float()
        scale = 1.0 / torch.sqrt(eigval.clamp(min=0)[:, None] / 4 + lam[None, :])  # w = scale * u
        scale32 = scale.float()
        u = torch.zeros((d, n_c * n_out), dtype=torch.float32, requires_grad=True)
        b = torch.from_numpy(np.tile(b0, n_c)).requires_grad_(True)

        def objective():
            w = scale32 * u
            z = (x_rot @ w).double() + b
            if kind == MULTICLASS:
                per_row = torch.nn.functional.cross_entropy(z.view(n, n_c, n_out).permute(0, 2, 1), target,
                                                            reduction="none")
            else:
                per_row = torch.nn.functional.binary_cross_entropy_with_logits(z, target, reduction="none")
            return (per_row * sw).sum() / n + (lam / 2 * (w.double() ** 2).sum(dim=0)).sum()

        evals = _lbfgs([u, b], objective, max_iter)
        log.debug("%d C values × %d outputs solved in %d evaluations", n_c, n_out, evals)
        coef = (eigvec @ (scale * u.detach().double())).T.numpy()  # back to the standardised basis
        intercept = b.detach().numpy()
    return [(coef[j * n_out:(j + 1) * n_out].copy(), intercept[j * n_out:(j + 1) * n_out].copy()) for j in range(n_c)]


@contextmanager
def _threads_for(n_values: int):
    """One thread for small problems: thread start-up and spin-waiting cost more than they save
    (up to 10x slower on a busy 2-core machine)."""
    before = torch.get_num_threads()
    if n_values < SMALL_PROBLEM:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _trainable(y: np.ndarray, kind: str) -> np.ndarray:
    """Per label: the training data holds both classes (multi-class: at least two classes)."""
    if kind == MULTICLASS:
        present = np.nansum(y, axis=0) > 0
        return np.full(y.shape[1], present.sum() >= 2) & present
    pos = np.nansum(y, axis=0)
    neg = (~np.isnan(y)).sum(axis=0) - pos
    return (pos > 0) & (neg > 0)


def _scores(x: np.ndarray, coef: np.ndarray, intercept: np.ndarray, kind: str) -> np.ndarray:
    z = x @ coef.T + intercept
    if kind == MULTICLASS:
        z = z - z.max(axis=1, keepdims=True)
        return np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    return 1.0 / (1.0 + np.exp(-z))


def fit_probe(vectors: np.ndarray, targets: Targets, split: np.ndarray, *, Cs: Sequence[float] = DEFAULT_CS,
              class_weight: str | None = None, train_rows: np.ndarray | None = None) -> LinearProbe:
    """Fit on the ``train`` rows (or `train_rows`), pick each label's C on the ``val`` rows.

    With a single C nothing is picked. Without validation rows, or where the validation rows lack a
    class of a label, that label keeps the middle C of `Cs` (``Cs[len(Cs) // 2]``).
    """
    if class_weight not in (None, "balanced"):
        raise AtlasError(f"class_weight must be None or 'balanced', got {class_weight!r}")
    train = np.flatnonzero(split == TRAIN) if train_rows is None else train_rows
    train = train[targets.known_rows()[train]]
    val = np.flatnonzero(split == VAL)
    val = val[targets.known_rows()[val]]
    if len(train) == 0:
        raise AtlasError("no training ECGs with a known label in this cohort")
    x_train = np.asarray(vectors[train], dtype=np.float64)
    mean, scale = _standardiser(x_train)
    y_train = targets.y[train]
    trainable = _trainable(y_train, targets.kind)
    path = fit_path((x_train - mean) / scale, y_train, targets.kind, Cs, balanced=class_weight == "balanced")
    n_labels = len(targets.labels)
    pick = np.zeros(n_labels, dtype=int)
    if len(Cs) > 1:
        pick[:] = len(Cs) // 2
        if len(val):
            x_val = (np.asarray(vectors[val], dtype=np.float64) - mean) / scale
            y_val = targets.y[val]
            scores = np.array([_val_auprc(y_val, _scores(x_val, coef, icpt, targets.kind))
                               for coef, icpt in path])  # (C, L)
            if targets.kind == MULTICLASS:  # one C for the whole softmax: macro AUPRC over classes
                macro = [np.nanmean(row) if np.isfinite(row).any() else np.nan for row in scores]
                scores = np.repeat(np.array(macro)[:, None], n_labels, axis=1)
            for j in range(n_labels):
                col = scores[:, j]
                if np.isfinite(col).any():
                    best = np.nanmax(col)
                    candidates = [i for i in range(len(Cs)) if np.isfinite(col[i]) and col[i] >= best - 1e-12]
                    pick[j] = min(candidates, key=lambda i: Cs[i])
    coef = np.stack([path[pick[j]][0][j] for j in range(n_labels)])
    intercept = np.array([path[pick[j]][1][j] for j in range(n_labels)])
    if targets.kind != MULTICLASS:
        for j in np.flatnonzero(~trainable):
            coef[j] = 0.0
    return LinearProbe(targets.kind, list(targets.labels), mean, scale, coef, intercept,
                       [float(Cs[i]) for i in pick], [bool(t) for t in trainable])


def _val_auprc(y: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Validation AUPRC per label (NaN where the validation rows lack a class)."""
    out = np.full(y.shape[1], np.nan)
    for j in range(y.shape[1]):
        k = ~np.isnan(y[:, j])
        out[j] = auroc_auprc(y[k, j], scores[k, j])[1][0]
    return out


# ---------------------------------------------------------------------------------------------
# Reports


@dataclass
class LabelCounts:
    label: str
    train_positive: int
    train_negative: int
    test_positive: int
    test_negative: int
    C: float
    flag: str | None  # why the label is left out of the macro average, or None


@dataclass
class FractionPoint:
    fraction: float
    train_patients: int
    train_ecgs: int
    macro_auroc: float | None
    macro_auprc: float | None
    per_label_auroc: dict[str, float | None]


@dataclass
class ProbeReport:
    """Everything measured about one probe on one cohort and split; JSON-ready via ``to_dict``."""

    kind: str
    labels: list[str]
    split: dict
    counts: list[LabelCounts]
    test: MetricSet
    fraction_curve: list[FractionPoint] = field(default_factory=list)
    baseline: "ProbeReport | None" = None
    baseline_model_id: str | None = None
    folds: list[dict] = field(default_factory=list)
    bootstrap: dict = field(default_factory=dict)
    #: the macro rule: a label needs this many positives and negatives (``count_flag``)
    min_positives: int = DEFAULT_MIN_POSITIVES

    def to_dict(self) -> dict:
        out = {
            "kind": self.kind, "labels": self.labels, "split": self.split,
            "counts": [vars(c) for c in self.counts], "test": self.test.to_dict(),
            "fraction_curve": [vars(p) for p in self.fraction_curve], "folds": self.folds,
            "bootstrap": self.bootstrap, "min_positives": self.min_positives,
        }
        if self.baseline is not None:
            out["baseline"] = {"model_id": self.baseline_model_id, **self.baseline.to_dict()}
        return out

    def summary_lines(self) -> list[str]:
        """A plain-text table a person can read in a terminal."""
        lines = [f"{'label':<28} {'train +/-':>11} {'test +/-':>10}  {'AUROC [95% CI]':<22} {'AUPRC [95% CI]':<22} C"]
        by_label = {m.label: m for m in self.test.labels}
        for c in self.counts:
            m = by_label[c.label]
            note = "  (left out of the macro: see below)" if c.flag else ""
            lines.append(f"{c.label[:28]:<28} {c.train_positive:>5}/{c.train_negative:<5} "
                         f"{c.test_positive:>4}/{c.test_negative:<5}"
                         f"  {str(m.auroc):<22} {str(m.auprc):<22} {c.C:g}{note}")
        lines.append(f"{'macro (' + str(len(self.test.macro_labels)) + ' labels)':<28} {'':>11} {'':>10}  "
                     f"{str(self.test.macro_auroc):<22} {str(self.test.macro_auprc):<22}")
        for p in self.fraction_curve:
            auroc = "n/a" if p.macro_auroc is None else f"{p.macro_auroc:.3f}"
            lines.append(f"  {p.fraction:>6.0%} of training patients ({p.train_patients}): macro AUROC {auroc}")
        if self.baseline is not None:
            lines.append(f"random-init baseline ({self.baseline_model_id}): "
                         f"macro AUROC {self.baseline.test.macro_auroc}, "
                         f"AUPRC {self.baseline.test.macro_auprc}")
        return lines + left_out_lines(self.test.left_out)


def _counts(targets: Targets, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = targets.y[rows]
    pos = np.nansum(y, axis=0).astype(int)
    neg = ((~np.isnan(y)).sum(axis=0) - pos).astype(int)
    return pos, neg


def count_flag(min_positives: int, **counts: tuple[int, int]) -> str | None:
    """The one macro rule, for training and evaluation alike: why a label is left out of the macro
    average (fewer than `min_positives` positives or negatives in any of `counts`, each a
    (positives, negatives) pair named by where it was counted), or None when it counts. A label needs
    at least one of each whatever `min_positives` says (0 included): with none there is no AUROC."""
    need = max(min_positives, 1)
    if all(min(pos, neg) >= need for pos, neg in counts.values()):
        return None
    seen = ", ".join(f"{where} {pos}/{neg}" for where, (pos, neg) in counts.items())
    return f"too few positives/negatives ({seen}; need {need} of each)"


def left_out_lines(left_out: dict[str, str]) -> list[str]:
    """What a terminal shows about the labels the macro average leaves out, and why."""
    if not left_out:
        return []
    return ["left out of the macro average (a label needs enough positives and negatives where it is trained "
            "and where it is measured):"] + [f"  {label}: {why}" for label, why in left_out.items()]


def _label_counts(targets: Targets, train_rows: np.ndarray, test_rows: np.ndarray, probe: LinearProbe,
                  min_positives: int) -> list[LabelCounts]:
    tp, tn = _counts(targets, train_rows)
    sp, sn = _counts(targets, test_rows)
    out = []
    for j, label in enumerate(targets.labels):
        flag = count_flag(min_positives, train=(int(tp[j]), int(tn[j])), test=(int(sp[j]), int(sn[j])))
        out.append(LabelCounts(label, int(tp[j]), int(tn[j]), int(sp[j]), int(sn[j]), probe.C[j], flag))
    return out


def _split_summary(split: np.ndarray, groups: np.ndarray, how: str) -> dict:
    out: dict = {"method": how}
    for name in (TRAIN, VAL, TEST):
        rows = split == name
        out[name] = {"ecgs": int(rows.sum()), "patients": int(len(np.unique(groups[rows].astype(str))))}
    return out


def train_probe(vectors: np.ndarray, targets: Targets, groups: np.ndarray, split: np.ndarray, *,
                split_method: str = "patient", Cs: Sequence[float] = DEFAULT_CS, class_weight: str | None = None,
                n_bootstrap: int = 1000, seed: int = 0, min_positives: int = DEFAULT_MIN_POSITIVES,
                fractions: Sequence[float] = DEFAULT_FRACTIONS) -> tuple[LinearProbe, ProbeReport]:
    """Fit on train, pick C on val, measure on test (with CIs), and draw the label-fraction curve.

    vectors: (n, D) record vectors; groups: patient group per ECG (``splits.patient_groups``);
    split: "train" / "val" / "test" / "" per ECG (from ``splits``).
    """
    vectors = np.asarray(vectors)
    groups = np.asarray(groups, dtype=object)
    split = np.asarray(split, dtype=object)
    if not (len(vectors) == len(targets.y) == len(groups) == len(split)):
        raise ValueError("vectors, targets, groups and split must have one entry per ECG")
    known = targets.known_rows()
    test = np.flatnonzero((split == TEST) & known)
    if len(test) == 0:
        raise AtlasError("the split leaves no test ECGs with a known label")
    probe = fit_probe(vectors, targets, split, Cs=Cs, class_weight=class_weight)
    train_rows = np.flatnonzero((split == TRAIN) & known)
    counts = _label_counts(targets, train_rows, test, probe, min_positives)
    macro = [c.label for c in counts if c.flag is None]
    scores = probe.predict_proba(vectors[test])
    metrics = evaluate(targets.y[test], scores, targets.labels, groups[test], macro_labels=macro,
                       n_resamples=n_bootstrap, seed=seed, curves=True)
    metrics = replace(metrics, left_out={c.label: c.flag for c in counts if c.flag})
    curve = label_fraction_curve(vectors, targets, groups, split, probe, fractions, Cs=Cs,
                                 class_weight=class_weight, macro_labels=macro, seed=seed)
    report = ProbeReport(targets.kind, list(targets.labels), _split_summary(split, groups, split_method), counts,
                         metrics, curve, bootstrap={"resamples": n_bootstrap, "seed": seed, "unit": "patient",
                                                    "level": 0.95}, min_positives=min_positives)
    return probe, report


def label_fraction_curve(vectors: np.ndarray, targets: Targets, groups: np.ndarray, split: np.ndarray,
                         full_probe: LinearProbe, fractions: Sequence[float], *, Cs: Sequence[float],
                         class_weight: str | None, macro_labels: list[str], seed: int) -> list[FractionPoint]:
    """Test macro AUROC / AUPRC when training on a random share of the training *patients*."""
    known = targets.known_rows()
    train_rows = np.flatnonzero((split == TRAIN) & known)
    test = np.flatnonzero((split == TEST) & known)
    patients = np.unique(groups[train_rows].astype(str))
    rng = np.random.default_rng(seed)
    points = []
    for fraction in sorted(fractions):
        if not 0 < fraction <= 1:
            raise AtlasError(f"label fractions must be in (0, 1], got {fraction}")
        if fraction >= 1:
            rows, probe = train_rows, full_probe
        else:
            chosen = rng.choice(patients, size=max(1, math.ceil(fraction * len(patients))), replace=False)
            rows = train_rows[np.isin(groups[train_rows].astype(str), chosen)]
            probe = fit_probe(vectors, targets, split, Cs=Cs, class_weight=class_weight, train_rows=rows)
        scores = probe.predict_proba(vectors[test])
        per_label: dict[str, float | None] = {}
        aurocs, auprcs = {}, {}
        for j, label in enumerate(targets.labels):
            k = ~np.isnan(targets.y[test, j])
            a, p = auroc_auprc(targets.y[test[k], j], scores[k, j])
            ok = probe.trainable[j] and np.isfinite(a[0])
            aurocs[label], auprcs[label] = (float(a[0]), float(p[0])) if ok else (np.nan, np.nan)
            per_label[label] = round(aurocs[label], 6) if ok else None
        macro_a = np.mean([aurocs[m] for m in macro_labels]) if macro_labels else np.nan
        macro_p = np.mean([auprcs[m] for m in macro_labels]) if macro_labels else np.nan
        points.append(FractionPoint(float(fraction), int(len(np.unique(groups[rows].astype(str)))), int(len(rows)),
                                    None if np.isnan(macro_a) else round(float(macro_a), 6),
                                    None if np.isnan(macro_p) else round(float(macro_p), 6), per_label))
    return points


def cross_validate_probe(vectors: np.ndarray, targets: Targets, groups: np.ndarray, folds: np.ndarray, *,
                         Cs: Sequence[float] = DEFAULT_CS, class_weight: str | None = None, n_bootstrap: int = 1000,
                         seed: int = 0, min_positives: int = DEFAULT_MIN_POSITIVES) -> tuple[LinearProbe, ProbeReport]:
    """k-fold by patient: each fold is tested once by a probe that never saw its patients.

    Round f trains on the other folds except f+1, which picks C. Metrics are computed on the pooled
    out-of-fold predictions (every ECG scored once) with patient-bootstrap CIs; per-fold macro
    figures are listed too. The returned probe is refitted on every patient, each label at the
    geometric median of the Cs its folds chose.
    """
    vectors = np.asarray(vectors)
    groups = np.asarray(groups, dtype=object)
    k = int(folds.max()) + 1
    known = targets.known_rows()
    oof = np.full(targets.y.shape, np.nan)
    chosen_c = []
    fold_rows = []
    for f in range(k):
        split = fold_split(folds, f)
        probe = fit_probe(vectors, targets, split, Cs=Cs, class_weight=class_weight)
        test = np.flatnonzero((split == TEST) & known)
        oof[test] = probe.predict_proba(vectors[test])
        chosen_c.append(probe.C)
        m = evaluate(targets.y[test], oof[test], targets.labels, groups[test], n_resamples=0)
        fold_rows.append({"fold": f, "test_ecgs": int(len(test)), "macro_auroc": m.macro_auroc.to_dict()["value"],
                          "macro_auprc": m.macro_auprc.to_dict()["value"], "C": probe.C})
    rows = np.flatnonzero(known)
    pos, neg = _counts(targets, rows)
    log_c = np.log10(np.array(chosen_c))
    final_c = [float(10 ** np.median(log_c[:, j])) for j in range(len(targets.labels))]
    everyone = np.full(len(vectors), TRAIN, dtype=object)
    final = _fit_fixed_c(vectors, targets, everyone, final_c, class_weight)
    counts = []
    for j, label in enumerate(targets.labels):
        # In k-fold every ECG is both trained on (k-1 times) and tested (once).
        flag = count_flag(min_positives, **{"all folds": (int(pos[j]), int(neg[j]))})
        counts.append(LabelCounts(label, int(pos[j]), int(neg[j]), int(pos[j]), int(neg[j]), final_c[j], flag))
    macro = [c.label for c in counts if c.flag is None]
    metrics = evaluate(targets.y[rows], oof[rows], targets.labels, groups[rows], macro_labels=macro,
                       n_resamples=n_bootstrap, seed=seed, curves=True)
    metrics = replace(metrics, left_out={c.label: c.flag for c in counts if c.flag})
    split_info = {"method": f"{k}-fold by patient", "folds": k,
                  "patients": int(len(np.unique(groups[rows].astype(str)))), "ecgs": int(len(rows))}
    report = ProbeReport(targets.kind, list(targets.labels), split_info, counts, metrics, folds=fold_rows,
                         bootstrap={"resamples": n_bootstrap, "seed": seed, "unit": "patient", "level": 0.95},
                         min_positives=min_positives)
    return final, report


def _fit_fixed_c(vectors: np.ndarray, targets: Targets, split: np.ndarray, Cs_per_label: list[float],
                 class_weight: str | None) -> LinearProbe:
    """One probe whose label j uses C = Cs_per_label[j] (labels sharing a C are solved together)."""
    if targets.kind == MULTICLASS:
        return fit_probe(vectors, targets, split, Cs=[Cs_per_label[0]], class_weight=class_weight)
    distinct = sorted(set(Cs_per_label))
    fits = {C: fit_probe(vectors, targets, split, Cs=[C], class_weight=class_weight) for C in distinct}
    first = fits[distinct[0]]
    coef = np.stack([fits[c].coef[j] for j, c in enumerate(Cs_per_label)])
    intercept = np.array([fits[c].intercept[j] for j, c in enumerate(Cs_per_label)])
    return LinearProbe(first.kind, first.labels, first.mean, first.scale, coef, intercept, list(Cs_per_label),
                       first.trainable)


def baseline_report(vectors: np.ndarray, targets: Targets, groups: np.ndarray, split: np.ndarray | None = None, *,
                    folds: np.ndarray | None = None, **kwargs) -> ProbeReport:
    """The same probe, same labels and same split on other vectors (a random-init encoder's)."""
    if folds is not None:
        kwargs.pop("fractions", None)
        kwargs.pop("split_method", None)
        return cross_validate_probe(vectors, targets, groups, folds, **kwargs)[1]
    return train_probe(vectors, targets, groups, split, **{**kwargs, "fractions": (1.0,)})[1]
