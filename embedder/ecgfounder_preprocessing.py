"""ECGFounder's input contract: any ``Recording`` → (n_windows, 12, 5000) model-ready windows.

The numeric steps reproduce the ECGFounder repository's functions (``util.filter_bandpass``,
``z_score_normalization`` and the linear ``resample_unequal`` at commit 6736707, as recorded in
``shared/data/parity_encoders/ecgfounder``), composed in the order its paper describes, because
its code has no working end-to-end path for other rates or lengths:

1. leads I, II, III, aVR, aVL, aVF, V1–V6 (the common lead rules of ``preprocessing``);
2. linear resampling to 500 Hz, endpoint-aligned: M = round(N·500/fs) samples, output j at input
   position j·(N − 1)/(M − 1) (no-op at 500 Hz);
3. per lead, float64, at 500 Hz: 50-Hz notch (``iirnotch``, Q 30) forwards-backwards, 4th-order
   Butterworth band-pass 0.67–40 Hz forwards-backwards, then minus a 0.4-s median-filter baseline
   (kernel 201, zero-padded edges), on the whole record;
4. per 10-s window (5000 samples): one z-score over all 12 leads together,
   (x − mean) / (std + 1e-8), population std, float32.

Our decisions where the code has none:

* **Sampling rate**: resampled to 500 Hz as above (the repository's filter hard-codes 500 Hz
  whatever the input rate; its only resampling path raises ``NameError``).
* **Windows**: non-overlapping 10-s windows from the start, each normalised on its own (the
  paper: consecutive 10-s windows, per-segment normalisation); the remainder is dropped; the
  record vector is the mean of the window vectors.
* **Short records**: shorter than 10 s → zero-padded at the end to one window before the
  z-score (the paper's zero padding), when at least ``MIN_DURATION_S`` (5 s, half a window) long;
  shorter ones are refused (``too_short``).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from scipy import signal as sps
from scipy.interpolate import interp1d

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

PREPROCESSING_VERSION = "ecgfounder-v1"
FS = 500
WINDOW_SAMPLES = 5000  # 10 s at 500 Hz
MIN_DURATION_S = 5.0
NOTCH_HZ, NOTCH_Q = 50.0, 30.0
BAND_HZ = (0.67, 40.0)
BASELINE_S = 0.4


def resample_linear(ecg: np.ndarray, fs: float) -> np.ndarray:
    """(12, N) → (12, round(N·500/fs)), endpoint-aligned linear interpolation (step 2)."""
    n_in = ecg.shape[1]
    n_out = round(n_in * FS / fs)
    if n_out == n_in:
        return np.asarray(ecg, dtype=np.float64)
    return interp1d(np.linspace(0, 1, n_in), ecg, axis=1)(np.linspace(0, 1, n_out))


def filter_at_500hz(ecg: np.ndarray) -> np.ndarray:
    """Notch, band-pass and median-baseline removal along time, float64 (step 3)."""
    b, a = sps.iirnotch(NOTCH_HZ, NOTCH_Q, fs=FS)
    out = sps.filtfilt(b, a, ecg, axis=-1)
    b, a = sps.butter(4, BAND_HZ, btype="bandpass", fs=FS)
    out = sps.filtfilt(b, a, out, axis=-1)
    # medfilt's zero-padded running median, for all leads at once
    baseline = ndimage.median_filter(out, size=(1, int(BASELINE_S * FS) + 1), mode="constant", cval=0.0)
    return out - baseline


def normalise_window(window: np.ndarray) -> np.ndarray:
    """One z-score over the whole (12, 5000) window, all leads together (step 4), float32."""
    return ((window - window.mean()) / (window.std() + 1e-8)).astype(np.float32)


def windows_from_filtered(filtered: np.ndarray) -> tuple[np.ndarray, float]:
    """Non-overlapping 10-s windows (a short record zero-padded to one), each normalised.

    Returns ((n, 12, 5000) float32, seconds dropped at the end).
    """
    return padded_windows(filtered, WINDOW_SAMPLES, FS, normalise_window)


_check_length = minimum_duration("ECGFounder", MIN_DURATION_S, WINDOW_SAMPLES / FS)


def prepare(rec: Recording, *, min_leads: int = DEFAULT_MIN_LEADS, derive_limb_leads: bool = False,
            max_duration_s: float = DEFAULT_MAX_DURATION_S) -> Prepared:
    """ECGFounder windows (n, 12, 5000) float32 for ``rec`` and a report of what was done."""
    leads = standard_twelve_leads(rec, min_leads=min_leads, derive_limb_leads=derive_limb_leads,
                                  max_duration_s=max_duration_s, check_length=_check_length)
    resampled = resample_linear(leads.signal.astype(np.float64), rec.fs)
    windows, dropped_s = windows_from_filtered(filter_at_500hz(resampled))
    report = PreprocessReport(
        original_fs=rec.fs, original_n_samples=rec.n_samples, original_duration_s=rec.duration_s,
        n_samples_resampled=resampled.shape[1], n_segments=len(windows), dropped_tail_s=dropped_s,
        preprocessing_version=PREPROCESSING_VERSION, **leads.report_fields())
    return Prepared(segments=windows, report=report)


def preprocess(rec: Recording, **kwargs) -> np.ndarray:
    return prepare(rec, **kwargs).segments
