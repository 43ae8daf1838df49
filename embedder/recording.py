"""The one value type that carries an ECG from the readers onward, and ECG-FM's input contract."""

from __future__ import annotations

import math
from dataclasses import dataclass
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


@dataclass(frozen=True)
class DigitalSamples:
    """An ECG as its recorder stored it: int16 ``samples`` (leads, samples) with one ``gain``
    (digital units per physical unit) and ``baseline`` (the digital value of 0) for every lead.

    Half the bytes of float32 on the wire; ``physical()`` turns them into the float32 signal.
    """

    samples: np.ndarray
    gain: float
    baseline: int

    def __post_init__(self) -> None:
        if self.samples.dtype != np.int16 or self.samples.ndim != 2:
            raise ValueError(f"DigitalSamples.samples must be 2-D int16, got {self.samples.dtype} {self.samples.shape}")
        if not (math.isfinite(self.gain) and self.gain > 0):
            raise ValueError(f"DigitalSamples.gain must be a positive number, got {self.gain}")

    def physical(self) -> np.ndarray:
        return physical_from_digital(self.samples, self.gain, self.baseline)


def physical_from_digital(samples: np.ndarray, gain: float, baseline: int) -> np.ndarray:
    """float32 ``(samples - baseline) / gain``: the same bits as computing in float64 (as wfdb
    does for physical samples) and rounding the result once to float32.

    When the gain is a float32 number (1000, 200, 4880, ...) float32 arithmetic gives those bits
    directly: the difference is exact, and a quotient of float32 numbers rounded to float64 first
    rounds to the same float32 (53 >= 2 x 24 + 2 bits, so double rounding is innocuous).
    """
    if float(np.float32(gain)) == gain and abs(baseline) < 2**24 - 2**15:
        out = samples.astype(np.float32)
        out -= np.float32(baseline)
        out /= np.float32(gain)
        return out
    return ((samples.astype(np.float64) - baseline) / gain).astype(np.float32)


class Recording:
    """One ECG as read from a file or the wire, before preprocessing.

    ``signal`` is (leads, samples) float32 in the source's units; ``lead_names`` are the source's
    names for its rows (any case / alias); ``metadata`` holds what the file said about the
    recording (age, sex, diagnoses, ...). ``source`` names where it came from (never logged above
    DEBUG: it can be a patient's file name). A reader that found int16 samples with one gain may
    give ``digital`` instead of ``signal``: ``signal`` is then computed on first use, and a client
    sending the ECG sends the int16 samples as they are.
    """

    #: A patient identifier found inside the file (hospital exports), kept apart from ``metadata``:
    #: it is never stored or sent as it is, only turned into a keyed pseudonym by the ingest client.
    patient_id_in_file: str | None = None

    def __init__(self, signal: np.ndarray | None, fs: float, lead_names: list[str],
                 metadata: dict[str, Any] | None = None, source: str = "", *,
                 digital: DigitalSamples | None = None) -> None:
        if signal is None and digital is None:
            raise ValueError("a Recording needs a signal or digital samples")
        self._signal = None if signal is None else np.asarray(signal, dtype=np.float32)
        self.digital = digital
        shape = self._signal.shape if self._signal is not None else digital.samples.shape
        if len(shape) != 2:
            raise ValueError(f"Recording.signal must be (leads, samples), got shape {shape}")
        if len(lead_names) != shape[0]:
            raise ValueError(f"Recording has {shape[0]} signal rows but {len(lead_names)} lead names")
        self._shape = shape
        self.fs = float(fs)
        self.lead_names = lead_names
        self.metadata = {} if metadata is None else metadata
        self.source = source

    @property
    def signal(self) -> np.ndarray:
        if self._signal is None:
            self._signal = self.digital.physical()
        return self._signal

    @signal.setter
    def signal(self, value: np.ndarray) -> None:
        self._signal = np.asarray(value, dtype=np.float32)
        self._shape = self._signal.shape
        self.digital = None

    @property
    def n_samples(self) -> int:
        return int(self._shape[1])

    @property
    def duration_s(self) -> float:
        return self.n_samples / self.fs

    def __repr__(self) -> str:
        kind = "int16 samples" if self._signal is None else "float32 signal"
        return (f"Recording({self._shape[0]} leads x {self._shape[1]} samples of {kind} at {self.fs:g} Hz, "
                f"leads {self.lead_names})")
