"""The one value type that carries an ECG from the readers onward, and ECG-FM's input contract."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: ECG-FM's lead order (ecgfm_spec.md §7): the 12 input channels of the first convolution.
STANDARD_LEADS: tuple[str, ...] = (
    "I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6",
)
#: ECG-FM was pretrained on 5-s windows at 500 Hz.
TARGET_FS = 500
SEGMENT_SAMPLES = 2500
#: Bumped whenever preprocessing changes numerically; stored with every vector.
PREPROCESSING_VERSION = "ecgfm-v1"


@dataclass
class Recording:
    """One ECG as read from a file or the wire, before preprocessing.

    ``signal`` is (leads, samples) float32 in the source's units; ``lead_names`` are the source's
    names for its rows (any case / alias); ``metadata`` holds what the file said about the
    recording (age, sex, diagnoses, ...). ``source`` names where it came from (never logged above
    DEBUG: it can be a patient's file name).
    """

    signal: np.ndarray
    fs: float
    lead_names: list[str]
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str = ""

    def __post_init__(self) -> None:
        self.signal = np.asarray(self.signal, dtype=np.float32)
        if self.signal.ndim != 2:
            raise ValueError(f"Recording.signal must be (leads, samples), got shape {self.signal.shape}")
        if len(self.lead_names) != self.signal.shape[0]:
            raise ValueError(
                f"Recording has {self.signal.shape[0]} signal rows but {len(self.lead_names)} lead names"
            )
        self.fs = float(self.fs)

    @property
    def n_samples(self) -> int:
        return int(self.signal.shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs
