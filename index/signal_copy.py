"""The store's own copy of each ECG's signal, so that nothing ever re-reads a path a client named.

A stored ECG is drawn again later (Explain, exemplar grids, probe baselines, the web atlas). The
store keeps the samples exactly as they arrived: int16 with one gain and baseline (half the bytes
of float32; what `ecg-atlas ingest` sends for WFDB records) or float32. That is lossless and
costs no encoding on the ingest path: the wire bytes go into a BLOB as they are. A 10-s 12-lead
ECG at 500 Hz takes 120 kB as int16 (240 kB as float32); a store that cannot afford that is
opened with ``keep_signals=False`` (``serve --no-keep-signals``) and serves signals from the
operator's data roots instead (``ecg_atlas.analysis.signals``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

TABLE = "ecg_signal"
INT16 = "int16"
FLOAT32 = "float32"
_DTYPES = {INT16: "<i2", FLOAT32: "<f4"}

DDL = (
    f"CREATE TABLE IF NOT EXISTS {TABLE} (\n"
    "    ecg_id VARCHAR NOT NULL,\n"
    "    fs DOUBLE NOT NULL,\n"
    "    lead_names VARCHAR[] NOT NULL,\n"
    "    sample_format VARCHAR NOT NULL,\n"
    "    gain DOUBLE,\n"
    "    baseline INTEGER,\n"
    "    n_samples INTEGER NOT NULL,\n"
    "    samples BLOB NOT NULL\n"
    ")"
)


@dataclass(frozen=True)
class StoredSignal:
    """One ECG's samples as they arrived: ``samples`` holds (leads, n_samples) little-endian
    int16 (with ``gain`` units per mV and ``baseline``) or float32 (mV) bytes, row-major."""

    fs: float
    lead_names: tuple[str, ...]
    sample_format: str
    n_samples: int
    samples: bytes
    gain: float | None = None
    baseline: int | None = None

    def __post_init__(self) -> None:
        if self.sample_format not in _DTYPES:
            raise ValueError(f"sample_format must be {INT16!r} or {FLOAT32!r}, got {self.sample_format!r}")
        itemsize = np.dtype(_DTYPES[self.sample_format]).itemsize
        if len(self.samples) != len(self.lead_names) * self.n_samples * itemsize:
            raise ValueError("StoredSignal.samples does not hold leads x n_samples values")
        if self.sample_format == INT16 and not (self.gain and self.gain > 0):
            raise ValueError("int16 samples need a positive gain")

    @classmethod
    def from_arrays(cls, fs: float, lead_names, signal: np.ndarray, *, gain: float | None = None,
                    baseline: int = 0) -> "StoredSignal":
        """From a (leads, samples) int16 array with its gain, or any float array (kept as float32)."""
        signal = np.asarray(signal)
        if signal.dtype == np.int16 and gain is not None:
            return cls(float(fs), tuple(lead_names), INT16, signal.shape[1],
                       np.ascontiguousarray(signal, "<i2").tobytes(), float(gain), int(baseline))
        return cls(float(fs), tuple(lead_names), FLOAT32, signal.shape[1],
                   np.ascontiguousarray(signal, "<f4").tobytes())

    @classmethod
    def from_recording(cls, recording) -> "StoredSignal":
        """From an ``embedder.Recording``: its int16 samples when the reader kept them, else float32."""
        digital = recording.digital
        if digital is not None:
            return cls.from_arrays(recording.fs, recording.lead_names, digital.samples, gain=digital.gain,
                                   baseline=digital.baseline)
        return cls.from_arrays(recording.fs, recording.lead_names, recording.signal)

    def array(self) -> np.ndarray:
        """The samples as stored: (leads, n_samples) int16 or float32."""
        return np.frombuffer(self.samples, dtype=_DTYPES[self.sample_format]).reshape(
            len(self.lead_names), self.n_samples)


def to_arrow(ecg_ids: list[str], signals: list[StoredSignal]) -> pa.Table:
    return pa.table({
        "ecg_id": pa.array(ecg_ids, pa.string()),
        "fs": pa.array([s.fs for s in signals], pa.float64()),
        "lead_names": pa.array([list(s.lead_names) for s in signals], pa.list_(pa.string())),
        "sample_format": pa.array([s.sample_format for s in signals], pa.string()),
        "gain": pa.array([s.gain for s in signals], pa.float64()),
        "baseline": pa.array([s.baseline for s in signals], pa.int32()),
        "n_samples": pa.array([s.n_samples for s in signals], pa.int32()),
        "samples": pa.array([s.samples for s in signals], pa.binary()),
    })


COLUMNS = "fs, lead_names, sample_format, gain, baseline, n_samples, samples"


def from_row(row: tuple) -> StoredSignal:
    fs, lead_names, sample_format, gain, baseline, n_samples, samples = row
    return StoredSignal(float(fs), tuple(lead_names), sample_format, int(n_samples), bytes(samples),
                        gain, baseline)
