"""PTB-XL fold 9 frozen linear probe: the first figure of ``make encoder-quality`` (benchmarks/encoder_quality.py).

The 1,579 PTB-XL ECGs of ../shared/data/ptbxl (folds 1-9; fold 10 is not in shared/) are embedded
by each encoder; a linear probe for the five diagnostic superclasses (the package's own
``analysis.probe``: L2 logistic regression) is trained on folds 1-7, its C picked on fold 8, and it is
measured on fold 9 with 95 % patient-bootstrap intervals. Fold 9 is the bundled encoder's held-out
fold: ecg-atlas-small-v2 and -v3 were fine-tuned on folds 1-7 with fold 8 for every choice
(embedder/bundled_recipe.py), and nothing here or there chooses anything on fold 9. Chance is
AUROC 0.5. Beside the intervals, the paired bootstrap interval of the macro difference to each
random-init encoder (the same resamples of fold 9's patients for both).
"""

from __future__ import annotations

import csv
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
PTBXL = Path(os.environ.get("ECG_ATLAS_SHARED_DATA", REPO.parent / "shared" / "data")) / "ptbxl"
SUPERCLASSES = ["NORM", "MI", "STTC", "CD", "HYP"]
TRAIN_FOLDS, VAL_FOLD, TEST_FOLD = range(1, 8), 8, 9


@dataclass
class PtbxlCohort:
    ids: list[str]
    groups: np.ndarray      # patient key per ECG
    split: np.ndarray       # train / val / test per ECG (folds 1-7 / 8 / 9)
    y: np.ndarray           # (n, 5) 0/1
    segments: list[np.ndarray]


def load_ptbxl() -> PtbxlCohort:
    from ecg_atlas.embedder import read_ecg
    from ecg_atlas.embedder.preprocessing import preprocess

    ids, groups, split, y, segments = [], [], [], [], []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for row in csv.DictReader(open(PTBXL / "manifest.csv", newline="")):
            fold = int(row["strat_fold"])
            part = "train" if fold in TRAIN_FOLDS else "val" if fold == VAL_FOLD else "test"
            ids.append(row["record"])
            groups.append(row["patient_id"] or row["record"])
            split.append(part)
            y.append([float(row[c]) for c in SUPERCLASSES])
            segments.append(preprocess(read_ecg(PTBXL / f"{row['record']}.hea")))
    return PtbxlCohort(ids, np.array(groups, dtype=object), np.array(split, dtype=object), np.array(y), segments)


def fold9_probe(vectors: np.ndarray, cohort: PtbxlCohort, n_bootstrap: int, seed: int) -> tuple[dict, np.ndarray]:
    """(the probe's fold-9 metrics, its fold-9 scores)."""
    from ecg_atlas.analysis.probe import MULTILABEL, Targets, train_probe

    probe, report = train_probe(vectors, Targets(MULTILABEL, SUPERCLASSES, cohort.y), cohort.groups, cohort.split,
                                n_bootstrap=n_bootstrap, seed=seed, fractions=(1.0,))
    return report.test.to_dict(), probe.predict_proba(vectors[cohort.split == "test"])


def paired_difference(cohort: PtbxlCohort, a: np.ndarray, b: np.ndarray, n_bootstrap: int, seed: int) -> dict:
    """Macro AUROC of scores `a` minus `b` on fold 9, paired patient-bootstrap 95 % interval."""
    from ecg_atlas.finetune.evaluate import paired_macro_difference

    test = cohort.split == "test"
    return paired_macro_difference(cohort.y[test], a, b, cohort.groups[test], list(range(len(SUPERCLASSES))),
                                   n_resamples=n_bootstrap, seed=seed).to_dict()
