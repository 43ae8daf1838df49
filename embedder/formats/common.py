"""What every hospital-export reader shares: limits, units, derived limb leads, demographics.

Readers hand their decoded leads to ``build_recording``, which checks them (lead count, lengths,
sampling rate, size) and returns the ``Recording`` every other reader returns: (leads, samples)
float32 in mV. Only age, sex, acquisition time and device become metadata; a patient id found in
the file goes to ``Recording.patient_id_in_file``, which only the pseudonymiser reads.
"""

from __future__ import annotations

import datetime as dt
import math
import re
import struct
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ecg_atlas.embedder.recording import Recording
from ecg_atlas.errors import InvalidECGError

# --- limits: every reader checks what a file declares against these before allocating for it ---
# (docs/reading.md: a hostile file is refused within 200 MB; tests/embedder/test_hostile_files.py)

#: Largest export file read at all (the largest valid ECG in the sample set is 29 MB; a file is read whole,
#: so this bounds what a read may hold beside the decoded signal, inside the 200 MB promise).
MAX_FILE_BYTES = 64 * 2**20
#: Sampling rates no ECG device writes; anything outside is a corrupt or hostile header.
MIN_FS, MAX_FS = 25.0, 20_000.0
#: leads x samples ceiling for one ECG, in every reader (exports, WFDB, HDF5 rows, NumPy): 2**24
#: values is 64 MiB of float32, 12 leads x 23 min at 1000 Hz, 2.3x the longest recording
#: ``preprocess`` takes by default (600 s) at the highest rate it takes (1000 Hz).
MAX_VALUES = 2**24
#: Bytes of one stored signal array (a .npy/.npz member, an HDF5 row or chunk): MAX_VALUES float32,
#: or half as many float64 values.
MAX_SIGNAL_BYTES = 4 * MAX_VALUES
#: Largest XML export parsed (a 10-min 12-lead HL7 aECG at 1000 Hz is ~28 MB; the samples: 0.5 MB).
MAX_XML_BYTES = 32 * 2**20
#: Markup ('<') in one XML export: the real ones have 500-2 400; 60 MB of ``<a/>`` would be 15 M
#: elements and ~2 GB of parsed tree.
MAX_XML_MARKUP = 200_000
#: Element nesting in one XML export (the real ones nest 4-15 deep; libxml2 stops at 256 itself).
MAX_XML_DEPTH = 64
#: Largest WFDB header (.hea) read (a 12-lead header with comments is ~1 kB).
MAX_HEADER_BYTES = 2**20

#: Physical units (as the formats spell them, lower-cased) -> factor to mV.
UNIT_TO_MV = {"v": 1e3, "volts": 1e3, "mv": 1.0, "millivolts": 1.0, "uv": 1e-3, "µv": 1e-3, "μv": 1e-3,
              "microvolts": 1e-3, "nv": 1e-6, "nanovolts": 1e-6}

#: SCP-ECG lead codes (EN 1064 table 14; DICOM channel sources use them as ``5.6.3-9-N``).
SCP_LEAD_CODES = {1: "I", 2: "II", 3: "V1", 4: "V2", 5: "V3", 6: "V4", 7: "V5", 8: "V6", 9: "V7", 10: "V2R",
                  11: "V3R", 12: "V4R", 13: "V5R", 14: "V6R", 15: "V7R", 16: "X", 17: "Y", 18: "Z",
                  61: "III", 62: "aVR", 63: "aVL", 64: "aVF", 65: "-aVR", 66: "V8", 67: "V9", 68: "V8R",
                  69: "V9R"}


@contextmanager
def decoder_errors(what: str, path: Path):
    """Whatever a damaged or hostile file makes a decoder (ours, pydicom, pyedflib, h5py, wfdb,
    NumPy) trip over ends as ``InvalidECGError``: one refusal with a reason, never another exception
    type that stops a caller's whole run. ``what`` names the file's kind ("GE MUSE XML file")."""
    try:
        yield
    except InvalidECGError:
        raise
    except FileNotFoundError as error:
        raise InvalidECGError(f"a file of {what} {path} was not found: {error.filename}",
                              reason="not_found") from error
    except MemoryError as error:
        raise InvalidECGError(f"{what} {path} needs more memory than one ECG may take", reason="too_large") from error
    except (ValueError, TypeError, KeyError, IndexError, AttributeError, ArithmeticError, UnicodeError, OSError,
            RuntimeError, struct.error) as error:
        raise InvalidECGError(f"{what} {path} is damaged or not what it claims to be "
                              f"({type(error).__name__}: {error})", reason="unreadable") from error


def check_file_size(path: Path, what: str, limit: int = MAX_FILE_BYTES) -> None:
    """Refuse a file too large to be one ECG before reading any of it."""
    size = path.stat().st_size
    if size > limit:
        raise InvalidECGError(f"{what} file {path} is {size / 2**20:.1f} MiB; files over "
                              f"{limit / 2**20:g} MiB are refused", reason="too_large")


def read_bounded(path: Path, what: str, limit: int = MAX_FILE_BYTES) -> bytes:
    check_file_size(path, what, limit)
    return path.read_bytes()


def mv_factor(unit: str, what: str) -> float:
    factor = UNIT_TO_MV.get(unit.strip().lower())
    if factor is None:
        raise InvalidECGError(f"{what}: amplitude unit {unit!r} is not a voltage (expected V, mV, uV)",
                              reason="bad_units")
    return factor


def check_fs(fs: float, what: str) -> float:
    if not (isinstance(fs, (int, float)) and math.isfinite(fs) and MIN_FS <= fs <= MAX_FS):
        raise InvalidECGError(f"{what}: sampling rate {fs} Hz is not a plausible ECG rate "
                              f"({MIN_FS:g}-{MAX_FS:g} Hz)", reason="bad_sampling_rate")
    return float(fs)


def check_size(n_leads: int, n_samples: int, what: str) -> None:
    """Refuse ``n_leads`` x ``n_samples`` (as a header declares them) beyond ``MAX_VALUES``."""
    if n_leads < 0 or n_samples < 0:
        raise InvalidECGError(f"{what}: the header declares {n_leads} leads x {n_samples} samples",
                              reason="unreadable")
    if n_leads * n_samples > MAX_VALUES:
        raise InvalidECGError(f"{what}: {n_leads} leads x {n_samples} samples is more than one ECG "
                              f"reader accepts ({MAX_VALUES} values)", reason="too_large")


def derive_limb_leads(names: list[str], leads: list[np.ndarray]) -> tuple[list[str], list[np.ndarray]]:
    """Add III, aVR, aVL, aVF from I and II (Einthoven and Goldberger) where the file omits them."""
    upper = [n.upper() for n in names]
    if "I" not in upper or "II" not in upper:
        return names, leads
    lead_i, lead_ii = leads[upper.index("I")], leads[upper.index("II")]
    derived = {"III": lead_ii - lead_i, "aVR": -(lead_i + lead_ii) / 2,
               "aVL": lead_i - lead_ii / 2, "aVF": lead_ii - lead_i / 2}
    names, leads = list(names), list(leads)
    for name, values in derived.items():
        if name.upper() not in upper:
            names.append(name)
            leads.append(values)
    return names, leads


def build_recording(leads: Sequence[np.ndarray], lead_names: Sequence[str], fs: float, *,
                    declared_leads: int | None, what: str, source: str, metadata: dict[str, Any],
                    patient_id: str | None) -> Recording:
    """One checked ``Recording`` from decoded leads already in mV."""
    fs = check_fs(fs, what)
    if not leads:
        raise InvalidECGError(f"{what}: the rhythm waveform holds no leads", reason="no_waveform")
    if declared_leads is not None and declared_leads != len(leads):
        raise InvalidECGError(f"{what}: the header declares {declared_leads} leads but the file holds "
                              f"data for {len(leads)}", reason="lead_count_mismatch")
    lengths = {len(lead) for lead in leads}
    if len(lengths) != 1:
        raise InvalidECGError(f"{what}: leads have different lengths ({sorted(lengths)} samples); the "
                              f"file is truncated or inconsistent", reason="truncated")
    n_samples = lengths.pop()
    if n_samples == 0:
        raise InvalidECGError(f"{what}: the rhythm waveform holds no samples", reason="no_waveform")
    check_size(len(leads), n_samples, what)
    signal = np.empty((len(leads), n_samples), dtype=np.float32)
    with np.errstate(over="ignore", invalid="ignore"):  # beyond float32 is inf: preprocess refuses it
        for row, lead in zip(signal, leads):
            row[:] = lead
    recording = Recording(signal, fs, [str(n) for n in lead_names],
                          {k: v for k, v in metadata.items() if v not in (None, "")}, source)
    recording.patient_id_in_file = clean_patient_id(patient_id)
    return recording


#: Placeholders that anonymisers and carts write instead of an id: never a patient key.
_PLACEHOLDER_ID = re.compile(r"^(x+|0+|-+|\?+|n/?a|none|unknown|anonymous|removed)$", re.IGNORECASE)


def clean_patient_id(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    return None if not value or _PLACEHOLDER_ID.match(value) else value


def parse_sex(value: str | None) -> str | None:
    if not value:
        return None
    return {"m": "M", "male": "M", "f": "F", "female": "F"}.get(value.strip().lower())


def parse_age(value: str | float | None, unit: str = "years") -> int | None:
    """Whole years, or None for anything missing, negative or implausible (> 130)."""
    try:
        age = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    per_year = {"years": 1, "y": 1, "months": 12, "m": 12, "weeks": 52, "w": 52, "days": 365, "d": 365,
                "hours": 8766, "h": 8766}.get(unit.strip().lower())
    if per_year is None or not math.isfinite(age) or age < 0:
        return None
    years = int(age // per_year)
    return years if years <= 130 else None


def age_at(birth: dt.date | None, date: dt.date | None) -> int | None:
    """Whole years between a birth date and an acquisition date (only the age is ever kept)."""
    if birth is None or date is None:
        return None
    return parse_age(date.year - birth.year - ((date.month, date.day) < (birth.month, birth.day)))


def iso_time(date: dt.date | None, time: dt.time | None = None) -> str | None:
    """ISO 8601 acquisition time (seconds), or None without a valid date."""
    if date is None:
        return None
    if time is None:
        return date.isoformat()
    return dt.datetime.combine(date, time).isoformat(timespec="seconds")


def parse_date(value: str | None, *formats: str) -> dt.date | None:
    for fmt in formats:
        try:
            return dt.datetime.strptime((value or "").strip(), fmt).date()
        except ValueError:
            continue
    return None


def parse_time(value: str | None, *formats: str) -> dt.time | None:
    for fmt in formats:
        try:
            return dt.datetime.strptime((value or "").strip(), fmt).time()
        except ValueError:
            continue
    return None


def device_name(*parts: str | None) -> str | None:
    """'Manufacturer Model' from whichever parts the file gives (placeholders dropped)."""
    words = [p.strip() for p in parts if p and p.strip() and not _PLACEHOLDER_ID.match(p.strip())]
    unique = [w for i, w in enumerate(words) if w not in words[:i]]
    return " ".join(unique)[:120] or None
