"""Patient-disjoint splits: random by patient, from a user's split column, or k folds by patient.

Every split here is made over *patients*, never over ECGs: all ECGs of one patient land on the same
side, so a probe is never tested on a patient it was trained on. An ECG whose patient is unknown is
its own patient (``patient_groups``); that is the only safe reading of "unknown", and it is what the
store's ``exclude_same_patient`` search does too.

A split is an array of ``"train"`` / ``"val"`` / ``"test"`` (or ``""`` for ECGs left out), one per
ECG, in the cohort's order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ecg_atlas.errors import AtlasError

TRAIN, VAL, TEST = "train", "val", "test"
SPLITS = (TRAIN, VAL, TEST)
#: PTB-XL's recommended use of its `strat_fold` column: folds 1–8 train, 9 validation, 10 test.
PTBXL_FOLDS = {TRAIN: tuple(range(1, 9)), VAL: (9,), TEST: (10,)}


def patient_groups(patient_ids: Sequence[str | None], ecg_ids: Sequence[str]) -> np.ndarray:
    """One group key per ECG: its patient id, or (patient unknown) the ECG itself."""
    if len(patient_ids) != len(ecg_ids):
        raise ValueError(f"{len(patient_ids)} patient ids for {len(ecg_ids)} ECGs")
    return np.array([f"patient:{p}" if p else f"ecg:{e}" for p, e in zip(patient_ids, ecg_ids)], dtype=object)


def _strata(groups: np.ndarray, targets: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Unique patients and, per patient, a stratum: the rarest label the patient carries (or -1).

    ``targets`` is (n, L) with 1 / 0 / NaN (unknown). Stratifying on the rarest label keeps a rare
    label's few positive patients spread over the splits instead of all landing in one.
    """
    patients, codes = np.unique(groups.astype(str), return_inverse=True)
    if targets is None:
        return patients, np.full(len(patients), -1)
    positive = np.nan_to_num(np.asarray(targets, dtype=float), nan=0.0) > 0.5
    per_patient = np.zeros((len(patients), positive.shape[1]), dtype=bool)
    np.logical_or.at(per_patient, codes, positive)
    rarity = per_patient.sum(axis=0)  # positive patients per label
    order = np.argsort(rarity, kind="stable")  # rarest label first
    stratum = np.full(len(patients), -1)
    for label in order[::-1]:  # later (rarer) labels overwrite earlier ones
        stratum[per_patient[:, label]] = label
    return patients, stratum


def _interleave(n: int, fractions: Sequence[float]) -> np.ndarray:
    """Bucket per position 0..n-1 so that every prefix is as close to `fractions` as it can be.

    Position j goes to the bucket furthest behind its share; ties go to the later bucket, so the
    first positive patients of a rare stratum reach the test side first.
    """
    counts = np.zeros(len(fractions))
    out = np.empty(n, dtype=int)
    frac = np.asarray(fractions, dtype=float)
    for j in range(n):
        deficit = frac * (j + 1) - counts
        pick = len(frac) - 1 - int(np.argmax(deficit[::-1]))
        out[j] = pick
        counts[pick] += 1
    return out


def _assign_patients(groups: np.ndarray, targets: np.ndarray | None, fractions: Sequence[float],
                     seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Bucket index per ECG, patients shuffled (seeded) and dealt out stratum by stratum."""
    patients, stratum = _strata(groups, targets)
    rng = np.random.default_rng(seed)
    bucket_of_patient = np.empty(len(patients), dtype=int)
    for s in np.unique(stratum):
        members = rng.permutation(np.flatnonzero(stratum == s))
        bucket_of_patient[members] = _interleave(len(members), fractions)
    _, codes = np.unique(groups.astype(str), return_inverse=True)
    return bucket_of_patient[codes], patients


def split_by_patient(groups: np.ndarray, targets: np.ndarray | None = None, *,
                     fractions: tuple[float, float, float] = (0.7, 0.1, 0.2), seed: int = 0) -> np.ndarray:
    """Random train / val / test split over patients (stratified on the rarest label), seeded."""
    if len(fractions) != 3 or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise AtlasError(f"split fractions must be three non-negative numbers summing to 1, got {fractions}")
    buckets, _ = _assign_patients(groups, targets, fractions, seed)
    return np.array(SPLITS, dtype=object)[buckets]


def kfold_by_patient(groups: np.ndarray, k: int, targets: np.ndarray | None = None, *, seed: int = 0) -> np.ndarray:
    """Fold number 0..k-1 per ECG; every patient in exactly one fold (stratified like the split)."""
    n_patients = len(np.unique(groups.astype(str)))
    if not 2 <= k <= n_patients:
        raise AtlasError(f"k-fold needs 2 <= k <= number of patients ({n_patients}); got k={k}")
    folds, _ = _assign_patients(groups, targets, [1.0 / k] * k, seed)
    return folds


def fold_split(folds: np.ndarray, test_fold: int) -> np.ndarray:
    """The split for one round of k-fold: `test_fold` is test, the next fold validation, the rest train."""
    k = int(folds.max()) + 1
    out = np.full(len(folds), TRAIN, dtype=object)
    out[folds == (test_fold + 1) % k] = VAL
    out[folds == test_fold] = TEST
    return out


@dataclass(frozen=True)
class ColumnSplit:
    """Which values of a metadata column mean train, validation and test (e.g. PTB-XL `strat_fold`)."""

    column: str
    values: Mapping[str, tuple]

    @classmethod
    def parse(cls, text: str) -> "ColumnSplit":
        """``COLUMN`` (PTB-XL folds: 1–8 / 9 / 10) or ``COLUMN:train=1-8,val=9,test=10``.

        Values may be ranges of integers (``1-8``), ``|``-separated lists (``a|b``) or single values.
        """
        column, _, rest = text.partition(":")
        column = column.strip()
        if not column:
            raise AtlasError(f"split column spec {text!r} names no column")
        if not rest.strip():
            return cls(column, PTBXL_FOLDS)
        values: dict[str, tuple] = {}
        for part in rest.split(","):
            name, eq, spec = part.partition("=")
            name = name.strip().lower()
            if not eq or name not in SPLITS:
                raise AtlasError(f"split column spec {text!r}: write train=..., val=..., test=... "
                                 f"(e.g. strat_fold:train=1-8,val=9,test=10)")
            values[name] = _parse_values(spec.strip())
        if TRAIN not in values or TEST not in values:
            raise AtlasError(f"split column spec {text!r} must say which values are train and which test")
        return cls(column, values)

    def assign(self, column_values: Sequence[object], groups: np.ndarray) -> np.ndarray:
        """Split per ECG from its column value; refuses a column that puts a patient on two sides."""
        lookup = {}
        for split, vals in self.values.items():
            for v in vals:
                lookup[str(v)] = split
        out = np.array([lookup.get(_as_key(v), "") for v in column_values], dtype=object)
        check_patient_disjoint(out, groups, what=f"split column {self.column!r}")
        return out


def _parse_values(spec: str) -> tuple:
    out: list[object] = []
    for item in spec.split("|"):
        item = item.strip()
        lo, dash, hi = item.partition("-")
        if dash and lo.strip().lstrip("-").isdigit() and hi.strip().isdigit():
            out.extend(range(int(lo), int(hi) + 1))
        elif item:
            out.append(int(item) if item.lstrip("-").isdigit() else item)
    if not out:
        raise AtlasError(f"split values {spec!r} name nothing")
    return tuple(out)


def _as_key(value: object) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return "" if value is None else str(value)


def check_patient_disjoint(split: np.ndarray, groups: np.ndarray, what: str = "the split") -> None:
    """Raise when any patient has ECGs on two sides of `split` (counts only: no ids in messages)."""
    sides: dict[str, set] = {}
    for g, s in zip(groups.astype(str), split):
        if s:
            sides.setdefault(g, set()).add(s)
    crossing = sum(1 for s in sides.values() if len(s) > 1)
    if crossing:
        raise AtlasError(f"{what} puts {crossing} patient(s) on more than one side (train/val/test); a probe must "
                         f"never be tested on a patient it was trained on. Use a patient-level split column, "
                         f"or the default random split by patient")
