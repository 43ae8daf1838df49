"""ECG-FM's input contract: any ``Recording`` → (n_segments, 12, 2500) standardised 5-s windows.

The numeric steps follow fairseq-signals' ``scripts/preprocess/ecg/preprocess.py`` exactly
(ecgfm_spec.md §7), in this order:

1. reorder to I, II, III, aVR, aVL, aVF, V1–V6 (names matched by ``canonical_lead_name``);
2. resample to 500 Hz by linear interpolation: M = int(N · 500 / fs) output samples, the N input
   samples placed at linspace(0, M − 1, N), interpolated at 0 … M − 1 (no-op at 500 Hz);
3. per lead over the whole record: subtract the mean, divide by the population std; a constant
   lead (std 0) becomes all zeros;
4. cut non-overlapping 2500-sample windows from the start and drop the remainder.

Where the reference pipeline has no answer, this service decides (and ``PreprocessReport`` says
what it did):

* **Missing leads** are zero-filled, as ECG-FM's random lead masking and constant-lead handling
  do (the reference *drops* such records); a ``MissingLeadsWarning`` is issued. With
  ``derive_limb_leads=True`` a missing (or flat, or all-NaN) III, aVR, aVL or aVF is instead
  computed from I and II (Einthoven/Goldberger); off by default because the reference never
  does it.
* **Too few leads**: fewer than ``min_leads`` usable standard leads (recorded, not entirely NaN,
  not flat) is refused. The default,
  8, is the number of independent leads of a 12-lead ECG (I, II, V1–V6; the other four are linear
  combinations of I and II), which is also what many devices store. It admits every 12-lead
  record with a few dead leads and 8-lead exports, and refuses Holter/monitor recordings
  (1–3 channels) whose embeddings would be mostly zero input. A flat (constant) lead is a dead
  electrode: it reaches the model as zeros, so it does not count as usable.
* **NaN samples** (invalid-sample markers) are interpolated linearly per lead when every gap is
  at most ``MAX_NAN_GAP_S`` (0.1 s, shorter than a QRS complex: a bridge cannot invent a beat)
  and they are at most ``MAX_NAN_FRACTION`` (5 %) of the lead; longer gaps or more NaNs are
  refused. A lead that is entirely NaN counts as missing.
* **Implausible amplitudes** are refused (``implausible_amplitude``): an infinite sample, or any
  sample of a used lead beyond ±``MAX_ABS_AMPLITUDE`` (10⁶) in the signal's own units.
  Preprocessing is unit-free (each lead is standardised), so a recording may arrive in mV or in
  µV, and the limit must hold in both: 10⁶ µV is 1 V, three times the ±300 mV electrode offset
  that cart front ends are built to tolerate (IEC 60601-2-25, on top of a ±5 mV signal range)
  and six times the full scale of a 16-bit cart (±82–164 mV at 2.5–5 µV per step); the heart
  gives a few mV at the skin, and the largest sample of the sample corpus and of the hospital
  export files is 29 mV. Beyond that a "signal" is bytes that are not an ECG (random float32
  reaches ±3·10³⁸) or a scaling gone wrong.
* **Sampling rate** must lie in 100–1000 Hz (what ECG databases use; below 100 Hz the QRS is
  not resolved, above 1000 Hz the linear resampler would alias).
* **Duration**: at least 5 s after resampling (one window) and at most ``max_duration_s``
  (default 600 s = 120 windows, what one synchronous request should cost; longer recordings
  should be split by the caller).
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ecg_atlas.embedder.leads import canonical_lead_name
from ecg_atlas.embedder.recording import (
    PREPROCESSING_VERSION,
    SEGMENT_SAMPLES,
    STANDARD_LEADS,
    TARGET_FS,
    Recording,
)
from ecg_atlas.errors import InvalidECGError

logger = logging.getLogger(__name__)

MIN_FS = 100.0
MAX_FS = 1000.0
DEFAULT_MIN_LEADS = 8
DEFAULT_MAX_DURATION_S = 600.0
MAX_NAN_GAP_S = 0.1
MAX_NAN_FRACTION = 0.05
#: No sample of a used lead may lie beyond this, in mV or µV alike (module docstring: why).
MAX_ABS_AMPLITUDE = 1e6
SEGMENT_S = SEGMENT_SAMPLES / TARGET_FS

_LEAD_INDEX = {name: i for i, name in enumerate(STANDARD_LEADS)}
#: Limb leads that follow from I and II (Einthoven's law and Goldberger's augmented leads).
_FROM_I_AND_II = {
    "III": (-1.0, 1.0),
    "aVR": (-0.5, -0.5),
    "aVL": (1.0, -0.5),
    "aVF": (-0.5, 1.0),
}


class MissingLeadsWarning(UserWarning):
    """Some of ECG-FM's 12 leads were absent and have been zero-filled."""


@dataclass(frozen=True)
class PreprocessReport:
    """What preprocessing found and did; the service stores it with the vectors.

    Lead lists use ECG-FM's names. ``recorded_leads`` are the standard leads the recording holds
    with data (not entirely NaN); ``flat_leads`` are those of them that are constant (zeros after
    standardising, and not counted as usable); ``missing_leads`` were zero-filled, ``derived_leads``
    computed from I and II. ``nan_counts`` counts non-finite samples per lead (interpolated, or the
    whole lead when it is in ``nan_leads``). ``ignored_leads`` are the source's names that are not
    standard leads (``PLETH``, Frank ``VX``...).
    """

    original_fs: float
    original_n_samples: int
    original_duration_s: float
    n_samples_resampled: int
    n_segments: int
    dropped_tail_s: float
    recorded_leads: tuple[str, ...]
    missing_leads: tuple[str, ...]
    derived_leads: tuple[str, ...]
    nan_leads: tuple[str, ...]
    flat_leads: tuple[str, ...]
    ignored_leads: tuple[str, ...]
    nan_counts: dict[str, int] = field(default_factory=dict)
    preprocessing_version: str = PREPROCESSING_VERSION

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Prepared:
    segments: np.ndarray  # (n_segments, 12, 2500)
    report: PreprocessReport


def preprocess(
    rec: Recording,
    *,
    min_leads: int = DEFAULT_MIN_LEADS,
    derive_limb_leads: bool = False,
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
    dtype: type[np.floating] = np.float32,
) -> np.ndarray:
    """ECG-FM input windows (n_segments, 12, 2500) for ``rec``; see ``prepare``."""
    return prepare(
        rec,
        min_leads=min_leads,
        derive_limb_leads=derive_limb_leads,
        max_duration_s=max_duration_s,
        dtype=dtype,
    ).segments


def prepare(
    rec: Recording,
    *,
    min_leads: int = DEFAULT_MIN_LEADS,
    derive_limb_leads: bool = False,
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
    dtype: type[np.floating] = np.float32,
) -> Prepared:
    """Preprocess ``rec`` as ECG-FM expects and report what was done (module docstring).

    ``dtype`` is the output type: float32 for the model, float64 to compare with the reference
    (all arithmetic is float64 either way). Raises ``InvalidECGError`` when the ECG cannot be
    used, saying why.
    """
    if np.dtype(dtype) not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be float32 or float64, got {dtype}")
    leads = standard_twelve_leads(rec, min_leads=min_leads, derive_limb_leads=derive_limb_leads,
                                  max_duration_s=max_duration_s, check_length=_check_ecgfm_length)
    fs = rec.fs
    resampled = resample_to_target(leads.signal, fs)
    standardised = standardise_leads(resampled)
    n_segments = resampled.shape[1] // SEGMENT_SAMPLES
    segments = segment(standardised, dtype)

    report = PreprocessReport(
        original_fs=fs,
        original_n_samples=rec.n_samples,
        original_duration_s=rec.duration_s,
        n_samples_resampled=resampled.shape[1],
        n_segments=n_segments,
        dropped_tail_s=(resampled.shape[1] - n_segments * SEGMENT_SAMPLES) / TARGET_FS,
        **leads.report_fields(),
    )
    return Prepared(segments=segments, report=report)


@dataclass(frozen=True)
class TwelveLeads:
    """A recording's standard leads in ECG-FM's order, before any numeric step, and what was found.

    ``signal`` is (12, N) in the recording's dtype: missing leads are zero rows (or derived from I
    and II), short NaN gaps interpolated. Every encoder's pipeline starts from it, so the lead
    rules (module docstring) are the same whichever model runs.
    """

    signal: np.ndarray
    recorded_leads: tuple[str, ...]
    missing_leads: tuple[str, ...]
    derived_leads: tuple[str, ...]
    nan_leads: tuple[str, ...]
    flat_leads: tuple[str, ...]
    ignored_leads: tuple[str, ...]
    nan_counts: dict[str, int]

    def report_fields(self) -> dict[str, Any]:
        return {"recorded_leads": self.recorded_leads, "missing_leads": self.missing_leads,
                "derived_leads": self.derived_leads, "nan_leads": self.nan_leads,
                "flat_leads": self.flat_leads, "ignored_leads": self.ignored_leads,
                "nan_counts": self.nan_counts}


def _check_ecgfm_length(rec: Recording) -> None:
    n_resampled = int(rec.n_samples * TARGET_FS / rec.fs)
    if n_resampled < SEGMENT_SAMPLES:
        raise InvalidECGError(
            f"ECG is too short: {rec.duration_s:.2f} s ({n_resampled} samples at {TARGET_FS} Hz); "
            f"ECG-FM needs at least {SEGMENT_S:g} s ({SEGMENT_SAMPLES} samples at {TARGET_FS} Hz)",
            reason="too_short",
            details={"duration_s": round(rec.duration_s, 3), "minimum_s": SEGMENT_S},
        )


def padded_windows(record: np.ndarray, window_samples: int, fs: float,
                   per_window: Callable[[np.ndarray], np.ndarray]) -> tuple[np.ndarray, float]:
    """Non-overlapping windows of ``window_samples`` from the start of a (leads, n) record, a record
    shorter than one window zero-padded to it, each window passed through ``per_window``.

    Returns ((n_windows, leads, window_samples), seconds dropped at the end). The windowing of the
    encoders whose contract pads short records (HuBERT-ECG, ECGFounder); ECG-FM's drops them.
    """
    n = record.shape[1]
    if n < window_samples:
        record = np.pad(record, ((0, 0), (0, window_samples - n)))
    n_windows = record.shape[1] // window_samples
    windows = np.stack([per_window(record[:, i * window_samples:(i + 1) * window_samples])
                        for i in range(n_windows)])
    return windows, max(0, n - n_windows * window_samples) / fs


def minimum_duration(model: str, minimum_s: float, window_s: float) -> Callable[[Recording], None]:
    """The length rule of an encoder that zero-pads records of ``minimum_s``–``window_s`` seconds to
    one window and refuses shorter ones (``too_short``, with the figures)."""

    def check(rec: Recording) -> None:
        if rec.duration_s < minimum_s:
            raise InvalidECGError(
                f"ECG is too short: {rec.duration_s:.2f} s; {model} windows are {window_s:g} s and records of "
                f"{minimum_s:g}–{window_s:g} s are zero-padded to one window, shorter ones refused",
                reason="too_short", details={"duration_s": round(rec.duration_s, 3), "minimum_s": minimum_s})

    return check


def standard_twelve_leads(
    rec: Recording,
    *,
    min_leads: int = DEFAULT_MIN_LEADS,
    derive_limb_leads: bool = False,
    max_duration_s: float = DEFAULT_MAX_DURATION_S,
    check_length: Callable[[Recording], None] | None = None,
) -> TwelveLeads:
    """Check ``rec`` (sampling rate, leads, NaNs, duration) and gather its 12 standard leads.

    ``check_length`` is the encoder's own minimum-length rule, run after the common checks.
    Raises ``InvalidECGError`` when the ECG cannot be used, saying why.
    """
    if not 1 <= min_leads <= len(STANDARD_LEADS):
        raise ValueError(f"min_leads must be between 1 and 12, got {min_leads}")
    fs = rec.fs
    if not MIN_FS <= fs <= MAX_FS:
        raise InvalidECGError(
            f"sampling rate {fs:g} Hz is outside the supported range "
            f"{MIN_FS:g}–{MAX_FS:g} Hz",
            reason="bad_sampling_rate",
            details={"sampling_rate_hz": fs, "minimum_hz": MIN_FS, "maximum_hz": MAX_FS},
        )

    rows, ignored = _standard_rows(rec.lead_names)
    signal, nan_counts, nan_leads = _fill_nan_gaps(rec.signal, rows, fs)
    highest, lowest = signal.max(axis=1), signal.min(axis=1)  # all rows at once (NaN rows: NaN)
    constant_rows = highest == lowest
    flat = tuple(
        lead for lead in STANDARD_LEADS
        if lead in rows and lead not in nan_leads and constant_rows[rows[lead]]
    )
    present = tuple(lead for lead in STANDARD_LEADS if lead in rows and lead not in nan_leads)
    _check_amplitude(highest, lowest, rows, present)
    usable = [lead for lead in present if lead not in flat]
    if len(usable) < min_leads:
        absent = [lead for lead in STANDARD_LEADS if lead not in rows]
        details = {
            "not in the recording": absent,
            "entirely NaN": nan_leads,
            "flat (constant)": flat,
            "unrecognised lead names": ignored,
        }
        raise InvalidECGError(
            f"ECG has {len(usable)} usable standard leads ({', '.join(usable) or 'none'}); at least "
            f"{min_leads} of I, II, III, aVR, aVL, aVF, V1–V6 are required. "
            + "; ".join(f"{what}: {', '.join(leads)}" for what, leads in details.items() if leads),
            reason="too_few_leads",
            details={"usable_leads": ",".join(usable), "minimum": min_leads,
                     "missing_leads": ",".join(absent), "flat_leads": ",".join(flat)},
        )

    duration_s = rec.duration_s
    if duration_s > max_duration_s:
        raise InvalidECGError(
            f"ECG is too long: {duration_s:.1f} s; the limit is {max_duration_s:g} s "
            f"({int(max_duration_s // SEGMENT_S)} windows of 5 s). Split it into shorter pieces",
            reason="too_long",
            details={"duration_s": round(duration_s, 3), "maximum_s": max_duration_s},
        )
    if check_length is not None:
        check_length(rec)

    # The 12-lead record in the Recording's float32, as a 12-lead file would hold it: the
    # reference resamples its float32 input directly, and that rounding is part of parity.
    # Flat leads go in as they are: standardising turns them into zeros, as in the reference.
    twelve = np.zeros((len(STANDARD_LEADS), rec.n_samples), dtype=rec.signal.dtype)
    for lead in present:
        twelve[_LEAD_INDEX[lead]] = signal[rows[lead]]
    derived = _derive_limb_leads(twelve, usable) if derive_limb_leads else ()
    zero_filled = tuple(lead for lead in STANDARD_LEADS if lead not in present and lead not in derived)
    if zero_filled:
        warnings.warn(
            MissingLeadsWarning(f"ECG lacks leads {', '.join(zero_filled)}; they are zero-filled"),
            stacklevel=3,
        )
        logger.warning("zero-filling missing leads: %s", ", ".join(zero_filled))

    return TwelveLeads(signal=twelve, recorded_leads=present, missing_leads=zero_filled, derived_leads=derived,
                       nan_leads=nan_leads, flat_leads=flat, ignored_leads=ignored, nan_counts=nan_counts)


def resample_to_target(signal: np.ndarray, fs: float) -> np.ndarray:
    """(leads, N) at ``fs`` → (leads, int(N·500/fs)) float64 at 500 Hz, as fairseq-signals does.

    The reference calls scipy's ``interp1d(positions, signal, axis=1)(arange(M))``; this is the
    same computation, operation for operation, without the interpolator object (which copies and
    transposes the record): for each output step, the knot to its left (``searchsorted``, clipped
    as scipy clips it), slope = (right − left neighbour) / knot spacing, value = slope · offset +
    left neighbour. The neighbour difference stays in the input's dtype, as in scipy, which is
    what makes float32 input match the reference to 1e-15; the tests require equality with
    ``interp1d`` bit for bit.
    """
    n_in = signal.shape[1]
    if fs == TARGET_FS:
        return signal.astype(np.float64)
    plan = _cached_plan(n_in, fs) if n_in * TARGET_FS / fs <= MAX_CACHED_PLAN else _resampling_plan(n_in, fs)
    lo, spacing, offset = plan
    rise = np.diff(signal, axis=1)[:, lo]  # right − left neighbour, in the input's dtype
    return (rise / spacing) * offset + signal[:, lo]


#: Output lengths up to this (2 min at 500 Hz, 1.4 MB a plan) keep their resampling plan.
MAX_CACHED_PLAN = 60_000


def _resampling_plan(n_in: int, fs: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per output step: the knot to its left, the knot spacing, and the offset from that knot."""
    n_out = int(n_in * TARGET_FS / fs)
    positions = np.linspace(0, n_out - 1, n_in)
    steps = np.arange(n_out, dtype=np.float64)
    lo = np.searchsorted(positions, steps).clip(1, n_in - 1) - 1
    plan = (lo, positions[lo + 1] - positions[lo], steps - positions[lo])
    for array in plan:
        array.setflags(write=False)  # shared between threads and calls when cached
    return plan


#: Records of one database mostly share length and rate, so a bulk ingest reuses a few plans.
_cached_plan = functools.lru_cache(maxsize=16)(_resampling_plan)


def standardise_leads(signal: np.ndarray) -> np.ndarray:
    """Per-lead z-score over the whole record (population std), float64.

    Constant leads become zeros. "Constant" is tested as max == min as well as std == 0: the mean
    of a constant float can round, leaving a std of ~1e-17 that would blow the lead up.
    """
    signal = np.asarray(signal, dtype=np.float64)
    mean = signal.mean(axis=1, keepdims=True)
    centered = signal - mean
    # NumPy's std, step for step (mean of squared deviations from this same mean, then sqrt), so
    # the deviations serve twice and the result is bit-identical to ``signal.std(axis=1)``.
    std = np.sqrt(np.square(centered).mean(axis=1, keepdims=True))
    # max == min only needs checking where std is within rounding of zero relative to the mean:
    # a constant lead's std is at most ~1e-15 · |mean|; any other lead is far above 1e-9 · |mean|.
    constant = std[:, 0] == 0
    near_zero = np.flatnonzero(~constant & (std[:, 0] <= 1e-9 * np.abs(mean[:, 0])))
    if near_zero.size:
        constant[near_zero] = signal[near_zero].max(axis=1) == signal[near_zero].min(axis=1)
    safe_std = np.where(constant[:, None], 1.0, std)
    standardised = np.divide(centered, safe_std, out=centered)
    standardised[constant] = 0.0
    return standardised


def segment(signal: np.ndarray, dtype: type[np.floating] | None = None) -> np.ndarray:
    """(leads, M) → (M // 2500, leads, 2500) non-overlapping windows from the start, contiguous,
    in ``dtype`` (default: the signal's), copied and converted in one pass."""
    n_segments = signal.shape[1] // SEGMENT_SAMPLES
    kept = signal[:, : n_segments * SEGMENT_SAMPLES]
    windows = kept.reshape(signal.shape[0], n_segments, SEGMENT_SAMPLES)
    return windows.transpose(1, 0, 2).astype(dtype or signal.dtype, order="C")


def _standard_rows(lead_names: list[str]) -> tuple[dict[str, int], tuple[str, ...]]:
    """Map ECG-FM lead → row of the recording, and the names that are not standard leads."""
    rows: dict[str, int] = {}
    ignored: list[str] = []
    for row, name in enumerate(lead_names):
        lead = canonical_lead_name(name)
        if lead is None:
            ignored.append(name)
        elif lead in rows:
            raise InvalidECGError(
                f"lead {lead} appears twice (as {lead_names[rows[lead]]!r} and {name!r}); "
                f"rename or drop one",
            reason="duplicate_lead",
        )
        else:
            rows[lead] = row
    return rows, tuple(ignored)


def _check_amplitude(highest: np.ndarray, lowest: np.ndarray, rows: dict[str, int],
                     present: tuple[str, ...]) -> None:
    """Refuse a recording whose used leads reach beyond ±MAX_ABS_AMPLITUDE."""
    peak = np.maximum(np.abs(highest), np.abs(lowest))
    beyond = [lead for lead in present if peak[rows[lead]] > MAX_ABS_AMPLITUDE]
    if beyond:
        worst = max(float(peak[rows[lead]]) for lead in beyond)
        raise InvalidECGError(
            f"implausible amplitude: lead{'s' if len(beyond) > 1 else ''} {', '.join(beyond)} "
            f"reach{'' if len(beyond) > 1 else 'es'} {worst:.3g}; no ECG exceeds ±{MAX_ABS_AMPLITUDE:.0e} "
            f"in mV or µV (1 V even in µV): this is not an ECG signal, or its scaling is wrong",
            reason="implausible_amplitude",
            details={"leads": ",".join(beyond), "peak": f"{worst:.3g}", "limit": f"{MAX_ABS_AMPLITUDE:g}"},
        )


def _fill_nan_gaps(
    signal: np.ndarray, rows: dict[str, int], fs: float
) -> tuple[np.ndarray, dict[str, int], tuple[str, ...]]:
    """Interpolate short NaN gaps in the standard leads; report counts and all-NaN leads.

    Returns the signal (a copy only if something was filled), the NaN count per lead that had any,
    and the leads that are entirely NaN. Refuses leads with long gaps or too many NaNs.
    """
    nan_counts: dict[str, int] = {}
    nan_leads: list[str] = []
    filled = signal
    # One pass finds the rows holding any NaN or infinity: their float64 sum is not finite (a
    # float32 row cannot overflow a float64 sum). Only those rows are looked at sample by sample.
    suspect = ~np.isfinite(signal.sum(axis=1, dtype=np.float64))
    max_gap = int(MAX_NAN_GAP_S * fs)
    for lead in STANDARD_LEADS:
        if lead not in rows or not suspect[rows[lead]]:
            continue
        values = signal[rows[lead]]
        invalid = ~np.isfinite(values)
        count = int(invalid.sum())
        if count == 0:
            continue
        if np.isinf(values).any():  # NaN marks a missing sample; infinity is no measurement at all
            raise InvalidECGError(
                f"implausible amplitude: lead {lead} has infinite samples; no ECG has them "
                f"(NaN marks a missing sample)",
                reason="implausible_amplitude",
                details={"leads": lead, "peak": "inf", "limit": f"{MAX_ABS_AMPLITUDE:g}"},
            )
        nan_counts[lead] = count
        if count == values.size:
            nan_leads.append(lead)
            continue
        longest = _longest_run(invalid)
        if longest > max_gap or count > MAX_NAN_FRACTION * values.size:
            raise InvalidECGError(
                f"lead {lead} has {count} NaN samples ({count / values.size:.1%}) with a longest gap "
                f"of {longest / fs:.3f} s; at most {MAX_NAN_FRACTION:.0%} NaN and gaps of "
                f"{MAX_NAN_GAP_S:g} s are interpolated",
            reason="too_many_nans",
            details={"lead": lead, "nan_fraction": round(count / values.size, 4),
                     "longest_gap_s": round(longest / fs, 4), "maximum_fraction": MAX_NAN_FRACTION,
                     "maximum_gap_s": MAX_NAN_GAP_S},
        )
        if filled is signal:
            filled = signal.copy()
        valid = np.flatnonzero(~invalid)
        filled[rows[lead], invalid] = np.interp(np.flatnonzero(invalid), valid, values[valid])
    if nan_counts:
        logger.info("interpolated or dropped NaN samples in leads %s", ", ".join(nan_counts))
    return filled, nan_counts, tuple(nan_leads)


def _longest_run(mask: np.ndarray) -> int:
    edges = np.diff(np.concatenate(([0], mask.view(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    return int((ends - starts).max()) if starts.size else 0


def _derive_limb_leads(twelve: np.ndarray, usable: list[str]) -> tuple[str, ...]:
    """Fill unusable III, aVR, aVL, aVF in place from I and II; return the leads derived."""
    if "I" not in usable or "II" not in usable:
        return ()
    lead_i = twelve[_LEAD_INDEX["I"]].astype(np.float64)
    lead_ii = twelve[_LEAD_INDEX["II"]].astype(np.float64)
    derived = []
    for lead, (weight_i, weight_ii) in _FROM_I_AND_II.items():
        if lead not in usable:
            twelve[_LEAD_INDEX[lead]] = weight_i * lead_i + weight_ii * lead_ii
            derived.append(lead)
    if derived:
        logger.info("derived leads %s from I and II", ", ".join(derived))
    return tuple(derived)
