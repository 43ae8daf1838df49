"""Small real data for the fine-tuning engine's tests: a few PTB-XL records (../shared/data/ptbxl,
folds 1-8 train, 9 validation) read with ``read_ecg`` and cut into windows by the encoder's own
``prepare()``, labelled with PTB-XL's diagnostic superclasses from the folder's manifest."""

from __future__ import annotations

import csv
import hashlib
from functools import cache

import numpy as np
import torch

from ecg_atlas.embedder import load_encoder, read_ecg
from ecg_atlas.finetune.types import MULTICLASS, MULTILABEL, FinetuneData
from tests.conftest import shared_data_dir

ENCODER = "random:tiny"


def tiny_network(*, dropouts: bool = True) -> torch.nn.Module:
    """The tiny ECG-FM-architecture encoder's TrainableNetwork (its recipe's dropouts, or none)."""
    network = load_encoder(ENCODER).trainable()
    if not dropouts:
        for module in network.modules():
            for name, value in vars(module).items():
                if "dropout" in name and isinstance(value, float):
                    setattr(module, name, 0.0)
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
    return network


@cache
def _rows() -> tuple[dict, ...]:
    with open(shared_data_dir() / "ptbxl" / "manifest.csv", newline="") as f:
        return tuple(csv.DictReader(f))


@cache
def _windows(record: str) -> np.ndarray:
    encoder = load_encoder(ENCODER)
    return encoder.prepare(read_ecg(shared_data_dir() / "ptbxl" / record)).segments


def _pick(folds: set[int], n: int, label: str) -> list[dict]:
    """``n`` records of ``folds``, half with ``label`` and half without (in manifest order)."""
    rows = [r for r in _rows() if int(r["strat_fold"]) in folds]
    positive = [r for r in rows if r[label] == "1"][: (n + 1) // 2]
    negative = [r for r in rows if r[label] == "0"][: n // 2]
    return [r for pair in zip(positive, negative) for r in pair] + positive[len(negative):]


def ptbxl_data(*, train: int = 8, val: int = 6, labels: tuple[str, ...] = ("NORM", "MI"), task: str = MULTILABEL,
               unknown: tuple[tuple[int, int], ...] = ()) -> FinetuneData:
    """``train`` records of folds 1-8 and ``val`` of fold 9, balanced on the first label.

    multilabel / binary: y holds the 0/1 columns of ``labels``; ``unknown`` sets (record, label)
    entries to NaN. multiclass: class 0 = the first label present, 1 = ``other``.
    """
    chosen = [("train", r) for r in _pick(set(range(1, 9)), train, labels[0])]
    chosen += [("val", r) for r in _pick({9}, val, labels[0])]
    windows = [_windows(r["record"]) for _, r in chosen]
    segments = np.concatenate(windows).astype(np.float32)
    segment_record = np.repeat(np.arange(len(chosen)), [len(w) for w in windows]).astype(np.int64)
    if task == MULTICLASS:
        y = np.array([[0.0 if r[labels[0]] == "1" else 1.0] for _, r in chosen], dtype=np.float32)
        names = [labels[0], "other"]
    else:
        y = np.array([[float(r[label]) for label in labels] for _, r in chosen], dtype=np.float32)
        names = list(labels)
    for record, label in unknown:
        y[record, label] = np.nan
    ids = [r["record"] for _, r in chosen]
    split = np.array([part for part, _ in chosen])
    digest = hashlib.sha256("|".join(ids + names + list(split)).encode() + y.tobytes() + segments.tobytes())
    return FinetuneData(segments=segments, segment_record=segment_record, record_ids=ids,
                        groups=np.array([r["patient_id"] or r["record"] for _, r in chosen]), y=y, task=task,
                        labels=names, split=split, digest=digest.hexdigest())
