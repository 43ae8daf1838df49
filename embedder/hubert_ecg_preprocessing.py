"""HuBERT-ECG's input contract: any ``Recording`` → (n_windows, 12, 500) model-ready windows.

The numeric steps reproduce the HuBERT-ECG repository's code (``utils.ecg_preprocessing`` and
``dataset.ECGDataset`` at commit affe1f9, as recorded in ``shared/data/parity_encoders/hubert_ecg``),
quirks included, because the model learned on them:

1. leads I, II, III, aVR, aVL, aVF, V1–V6 (the common lead rules of ``preprocessing``: names
   matched without regard to case, short NaN gaps interpolated, missing leads zero-filled);
2. FIR band-pass "0.05–47 Hz" at the **original** rate: ``firwin`` with int(0.3·fs) taps rounded up
   to odd (Hamming window), applied forwards-backwards (``filtfilt``). With so few taps the 0.05 Hz
   edge does nothing: in effect a 47-Hz low-pass with a 3.6 % dip near DC;
3. FFT resampling to 500 Hz (``scipy.signal.resample`` to int(N·500/fs) samples, run even at 500 Hz
   as the reference does);
4. per lead, min–max scaling over the whole record: 2·(x − min)/(max − min + 1e-8) − 1 (a flat or
   zero-filled lead becomes −1, as a flat lead does in the reference);
5. per 5-s window (2500 samples at 500 Hz): the 12 leads joined lead-major into one 30000-vector
   and decimated ×5 **as one vector** (``scipy.signal.decimate``: order-8 Chebyshev I, zero phase),
   giving 6000 values = 12 leads × 500 samples at 100 Hz, float32. The window is returned as
   (12, 500); ``reshape(-1, 6000)`` is the reference's model input.

Our decisions where the reference has none:

* **Longer records**: the reference takes the first 5 s only. We cut non-overlapping 5-s windows
  from the start (remainder dropped, as for ECG-FM); the record vector is the mean of the window
  vectors (the service's rule for every encoder).
* **Records shorter than 5 s** crash the reference's dataset class. As its maintainer advises
  (HuBERT-ECG issue #1) the 500-Hz preprocessed record is zero-padded at the end to 5 s, when it
  is at least ``MIN_DURATION_S`` (2.5 s, half a window) long; shorter ones are refused
  (``too_short``).
* The reference's attention mask is always all ones (its zero-padding test runs after
  decimation, which leaves no exact zeros), and its evaluation passes no mask: we pass none.
"""

from __future__ import annotations

import numpy as np
from scipy import signal as sps

from .preprocessing import (
    DEFAULT_MAX_DURATION_S,
    DEFAULT_MIN_LEADS,
    Prepared,
    PreprocessReport,
    minimum_duration,
    padded_windows,
    standard_twelve_leads,
)
from .recording import Recording

PREPROCESSING_VERSION = "hubert-ecg-v1"
FS = 500
WINDOW_SAMPLES = 2500  # 5 s at 500 Hz, before decimation
DECIMATION = 5
MODEL_SAMPLES_PER_LEAD = WINDOW_SAMPLES // DECIMATION  # 500: 5 s at 100 Hz
MIN_DURATION_S = 2.5
BAND_HZ = (0.05, 47.0)


def band_pass(ecg: np.ndarray, fs: float) -> np.ndarray:
    """(12, N) float64 → FIR band-pass along time at ``fs``, forwards-backwards (step 2)."""
    taps = int(0.3 * fs)
    taps += 1 - taps % 2  # an odd number of taps: a type-I linear-phase filter
    kernel = sps.firwin(taps, [2 * BAND_HZ[0] / fs, 2 * BAND_HZ[1] / fs], pass_zero=False)
    return sps.filtfilt(kernel, [1.0], ecg, axis=-1)


def scale_leads(ecg: np.ndarray) -> np.ndarray:
    """Per-lead min–max scaling to [−1, 1) over the whole record (step 4)."""
    low = ecg.min(axis=1, keepdims=True)
    high = ecg.max(axis=1, keepdims=True)
    return 2 * (ecg - low) / (high - low + 1e-8) - 1


def resample_to_500hz(ecg: np.ndarray, fs: float) -> np.ndarray:
    """FFT resampling to int(N·500/fs) samples (step 3; run at 500 Hz too, as the reference does)."""
    return sps.resample(ecg, int(ecg.shape[1] * FS / fs), axis=1)


def record_at_500hz(ecg: np.ndarray, fs: float) -> np.ndarray:
    """Steps 2–4 on a (12, N) float64 record: what the reference stores as its 500-Hz ``.npy``."""
    return scale_leads(resample_to_500hz(band_pass(np.asarray(ecg, dtype=np.float64), fs), fs))


def model_window(window: np.ndarray) -> np.ndarray:
    """(12, 2500) float64 at 500 Hz → (12, 500) float32: joined lead-major, decimated ×5 (step 5)."""
    decimated = sps.decimate(np.ascontiguousarray(window).reshape(-1), DECIMATION)
    return decimated.astype(np.float32).reshape(window.shape[0], -1)


def windows_from_500hz(record: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-overlapping 5-s windows of a preprocessed 500-Hz record (a short one zero-padded to 5 s).

    Returns ((n, 12, 500) float32, seconds dropped at the end).
    """
    return padded_windows(record, WINDOW_SAMPLES, FS, model_window)


_check_length = minimum_duration("HuBERT-ECG", MIN_DURATION_S, WINDOW_SAMPLES / FS)


def prepare(rec: Recording, *, min_leads: int = DEFAULT_MIN_LEADS, derive_limb_leads: bool = False,
            max_duration_s: float = DEFAULT_MAX_DURATION_S) -> Prepared:
    """HuBERT-ECG windows (n, 12, 500) float32 for ``rec`` and a report of what was done."""
    leads = standard_twelve_leads(rec, min_leads=min_leads, derive_limb_leads=derive_limb_leads,
                                  max_duration_s=max_duration_s, check_length=_check_length)
    record = record_at_500hz(leads.signal.astype(np.float64), rec.fs)
    windows, dropped_s = windows_from_500hz(record)
    report = PreprocessReport(
        original_fs=rec.fs, original_n_samples=rec.n_samples, original_duration_s=rec.duration_s,
        n_samples_resampled=record.shape[1], n_segments=len(windows), dropped_tail_s=dropped_s,
        preprocessing_version=PREPROCESSING_VERSION, **leads.report_fields())
    return Prepared(segments=windows, report=report)


def preprocess(rec: Recording, **kwargs) -> np.ndarray:
    return prepare(rec, **kwargs).segments
