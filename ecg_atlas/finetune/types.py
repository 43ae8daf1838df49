"""The value the fine-tuning stages hand each other: model-ready segments with record-level labels."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BINARY, MULTILABEL, MULTICLASS = "binary", "multilabel", "multiclass"
TASKS = (BINARY, MULTILABEL, MULTICLASS)


@dataclass
class FinetuneData:
    """Every record of a fine-tuning run, as the base encoder's own pipeline prepared it.

    Training is segment-level (each window carries its record's labels); prediction is
    record-level (the mean of the record's segment probabilities, as ECG-FM does).
    """

    #: (S, 12, N) float32: model-ready windows in the base encoder's input contract
    segments: np.ndarray
    #: (S,) int64: the record (row of ``y``) each window belongs to
    segment_record: np.ndarray
    #: (R,) record ids (ecg_id in a store, the manifest's id column for files)
    record_ids: list[str]
    #: (R,) patient keys (``analysis.splits.patient_groups``): bootstrap and split unit
    groups: np.ndarray
    #: binary / multilabel: (R, L) float32 with 1 / 0 / NaN (unknown); multiclass: (R, 1) float32
    #: holding the class index, NaN unknown
    y: np.ndarray
    task: str
    #: label names (multiclass: the class names, in index order)
    labels: list[str]
    #: (R,) "train" / "val" / "test" / "" (left out)
    split: np.ndarray
    #: sha256 over record ids, labels, split and segments: names the training data in model.pt
    digest: str

    def __post_init__(self) -> None:
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if len(self.segments) != len(self.segment_record):
            raise ValueError("one record index per segment")
        if not (len(self.record_ids) == len(self.groups) == len(self.y) == len(self.split)):
            raise ValueError("record_ids, groups, y and split must have one entry per record")

    @property
    def n_outputs(self) -> int:
        """Width of the classifier head: labels for binary / multilabel, classes for multiclass."""
        return len(self.labels)

    def records_in(self, part: str) -> np.ndarray:
        """Indices of the records in split ``part``."""
        return np.flatnonzero(self.split == part)

    def segments_in(self, part: str) -> np.ndarray:
        """Indices of the segments whose record is in split ``part``."""
        return np.flatnonzero(self.split[self.segment_record] == part)
