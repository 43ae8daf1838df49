"""Read an ECG from a file (WFDB, CODE-15 HDF5, NumPy, hospital exports) or an array into a ``Recording``.

Every reader returns the signal in the source's own units and lead names; reordering, resampling
and standardising are ``preprocess``'s job. Anything unreadable raises ``InvalidECGError`` with a
message that names the problem. The path may appear in that message (it is the caller's own
input) but never in log records above DEBUG: file names can identify patients.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ecg_atlas.embedder.formats import EXTENSIONS as EXPORT_EXTENSIONS
from ecg_atlas.embedder.formats import FORMATS as EXPORT_FORMATS
from ecg_atlas.embedder.formats import read_export, sniff_format
from ecg_atlas.embedder.recording import STANDARD_LEADS, DigitalSamples, Recording
from ecg_atlas.errors import InvalidECGError

logger = logging.getLogger(__name__)

#: CODE-15% tracings are 4096 samples at 400 Hz in the standard lead order (zero-padded).
CODE15_FS = 400
_WFDB_SUFFIXES = {".hea", ".dat", ".mat"}
_HDF5_SUFFIXES = {".h5", ".hdf5", ".hdf"}


def read_ecg(
    path: str | Path,
    *,
    fs: float | None = None,
    lead_names: Sequence[str] | None = None,
    record_index: int | None = None,
) -> Recording:
    """Read one ECG from ``path``; the file type decides the reader.

    * WFDB record: ``path`` is the record (``data/A0001``) or any of its files (``.hea``, ``.dat``,
      ``.mat``); read in physical units. Header comments become ``metadata`` (see
      ``parse_header_comments``).
    * CODE-15-style HDF5 (``.h5``/``.hdf5``/``.hdf``): row ``record_index`` of ``tracings``
      (N × samples × 12, 400 Hz, standard lead order), zero padding stripped; ``exam_id`` kept.
    * ``.npy``: a (leads, samples) array; ``fs`` and ``lead_names`` are required.
    * ``.npz``: key ``signal`` (leads, samples), optional ``fs`` and ``lead_names``.
    * Hospital exports, recognised by content: GE MUSE XML, DICOM waveform, Philips Sierra XML,
      HL7 aECG, SCP-ECG, EDF/EDF+ (``embedder.formats``); signal in mV, demographics as metadata.

    ``fs`` and ``lead_names``, when given, override what the file says (e.g. to name the channels
    of a WFDB record that calls them ``ECG 1..4``).
    """
    path = Path(path)
    kind, location = _locate(path)
    if record_index is not None and kind != "hdf5":
        raise InvalidECGError(f"record_index only applies to HDF5 files, not to {path}", reason="bad_argument")
    logger.debug("reading %s ECG from %s", kind, location)
    if kind == "wfdb":
        recording = _read_wfdb(location)
    elif kind == "hdf5":
        with _open_tracings(location) as (tracings, exam_ids):
            recording = _hdf5_row(tracings, exam_ids, _row_index(tracings, record_index, location), location)
    elif kind == "npy":
        recording = _read_npy(location, fs, lead_names)
    elif kind == "npz":
        recording = _read_npz(location, fs, lead_names)
    else:
        recording = read_export(kind, location)
    if fs is None and lead_names is None:
        return recording
    overridden = recording_from_array(
        recording.signal,
        recording.fs if fs is None else fs,
        recording.lead_names if lead_names is None else lead_names,
        recording.metadata,
        source=recording.source,
    )
    overridden.patient_id_in_file = recording.patient_id_in_file
    return overridden


def iter_hdf5_ecgs(
    path: str | Path, *, fs: float | None = None, lead_names: Sequence[str] | None = None
) -> Iterator[Recording]:
    """Every row of a CODE-15-style HDF5 file, in order, one ``Recording`` at a time.

    Rows are read lazily (a CODE-15 part file holds ~20 000 tracings).
    """
    path = Path(path)
    kind, location = _locate(path)
    if kind != "hdf5":
        raise InvalidECGError(f"{path} is not an HDF5 file (.h5, .hdf5, .hdf)", reason="unreadable")
    with _open_tracings(location) as (tracings, exam_ids):
        for index in range(tracings.shape[0]):
            recording = _hdf5_row(tracings, exam_ids, index, location)
            if fs is not None or lead_names is not None:
                recording = recording_from_array(
                    recording.signal,
                    recording.fs if fs is None else fs,
                    recording.lead_names if lead_names is None else lead_names,
                    recording.metadata,
                    source=recording.source,
                )
            yield recording


def recording_from_array(
    signal: Any,
    fs: float,
    lead_names: Sequence[str],
    metadata: dict[str, Any] | None = None,
    *,
    source: str = "",
) -> Recording:
    """Validate an in-memory (leads, samples) array, e.g. one that arrived over the network.

    Accepts integer or floating-point samples (cast to float32); NaN samples are allowed here
    (``preprocess`` decides what to do with them). Raises ``InvalidECGError`` for anything else.
    """
    signal = np.asarray(signal)
    if signal.dtype.kind not in "fiu":
        raise InvalidECGError(
            f"ECG samples must be integers or floating-point numbers, got dtype {signal.dtype}",
            reason="bad_signal",
        )
    if signal.ndim != 2:
        raise InvalidECGError(
            f"ECG signal must be 2-D (leads, samples), got {signal.ndim}-D shape {signal.shape}",
            reason="bad_signal",
        )
    if 0 in signal.shape:
        raise InvalidECGError(f"ECG signal is empty: shape {signal.shape}", reason="bad_signal")
    names = [str(name) for name in lead_names]
    if any(not name.strip() for name in names):
        raise InvalidECGError(f"lead names must be non-empty strings, got {names}", reason="bad_signal")
    if len(names) != signal.shape[0]:
        raise InvalidECGError(
            f"ECG signal has {signal.shape[0]} leads (rows; expected layout is (leads, samples)) "
            f"but {len(names)} lead names were given: {names}",
            reason="bad_signal",
        )
    if isinstance(fs, bool) or not isinstance(fs, (int, float, np.integer, np.floating)):
        raise InvalidECGError(f"sampling rate must be a number in Hz, got {fs!r}", reason="bad_signal")
    if not math.isfinite(fs) or fs <= 0:
        raise InvalidECGError(f"sampling rate must be a positive finite number in Hz, got {fs}", reason="bad_signal")
    return Recording(
        signal=np.ascontiguousarray(signal, dtype=np.float32),  # rows are leads: keep them contiguous
        fs=float(fs),
        lead_names=names,
        metadata=dict(metadata or {}),
        source=source,
    )


# --- WFDB ----------------------------------------------------------------------------------------

_TAGGED_FIELD = re.compile(r"<([^<>]+)>:\s*(.*?)\s*(?=<[^<>]+>:|$)")
_KEY_VALUE = re.compile(r"^\s*([^:]+?)\s*:\s*(.*?)\s*$")


def parse_header_comments(comments: Sequence[str]) -> dict[str, Any]:
    """Turn WFDB header comment lines into metadata.

    ``Key: value`` lines (PhysioNet Challenge style) and ``<key>: value`` fields (MIT style, several
    on one line) become entries under snake_case keys; lines without a key are collected under
    ``notes``. Three keys are normalised: ``age`` → int or None (``NaN``/``Unknown``/empty),
    ``sex`` → ``"M"``/``"F"``/None, ``dx`` → list of SNOMED-CT code strings.
    """
    metadata: dict[str, Any] = {}
    notes: list[str] = []
    for line in comments:
        tagged = _TAGGED_FIELD.findall(line)
        pairs = tagged if tagged else [m.groups() for m in [_KEY_VALUE.match(line)] if m]
        if not pairs:
            if line.strip():
                notes.append(line.strip())
            continue
        for key, value in pairs:
            metadata[_snake_case(key)] = value
    if "age" in metadata:
        metadata["age"] = _parse_age(metadata["age"])
    if "sex" in metadata:
        metadata["sex"] = _parse_sex(metadata["sex"])
    if "dx" in metadata:
        metadata["dx"] = [code.strip() for code in metadata["dx"].split(",") if code.strip()]
    if notes:
        metadata["notes"] = notes
    return metadata


def _snake_case(key: str) -> str:
    return re.sub(r"[^0-9a-z]+", "_", key.lower()).strip("_")


def _parse_age(value: str) -> int | None:
    try:
        age = float(value)
    except ValueError:
        return None
    return int(age) if math.isfinite(age) and age >= 0 else None


def _parse_sex(value: str) -> str | None:
    return {"m": "M", "male": "M", "f": "F", "female": "F"}.get(value.strip().lower())


def _read_wfdb(base: Path) -> Recording:
    from .wfdb_reader import read_wfdb_record

    direct = read_wfdb_record(base)  # the common subset, ~8x faster; None: let wfdb read it
    if direct is not None:
        metadata = parse_header_comments(direct.comments)
        digital = direct.uniform_digital()
        if digital is not None and direct.fs > 0:  # int16 + one gain: the float32 signal only when asked for
            return Recording(None, direct.fs, list(direct.sig_name), metadata, str(base),
                             digital=DigitalSamples(*digital))
        return recording_from_array(direct.p_signal.T, direct.fs, direct.sig_name, metadata, source=str(base))
    import wfdb  # imported here: only WFDB input needs it, and it is slow to import

    try:
        header = wfdb.rdheader(str(base))
    except FileNotFoundError as error:
        raise InvalidECGError(f"WFDB header not found: {base}.hea", reason="not_found") from error
    except Exception as error:  # wfdb raises many types for a malformed header
        raise InvalidECGError(
            f"{base}.hea is not a valid WFDB header ({type(error).__name__}: {error})",
            reason="unreadable",
        ) from error
    if not header.n_sig or not header.sig_len:
        raise InvalidECGError(
            f"WFDB header {base}.hea declares no signal samples "
            f"({header.n_sig} signals, {header.sig_len} samples)",
            reason="unreadable",
        )
    try:
        record = wfdb.rdrecord(str(base), physical=True)
    except FileNotFoundError as error:
        raise InvalidECGError(f"signal file of WFDB record {base} not found: {error.filename}", reason="not_found") from error
    except Exception as error:
        raise InvalidECGError(
            f"could not read the signal file of WFDB record {base}; it may be truncated or not match "
            f"its header ({type(error).__name__}: {error})",
            reason="unreadable",
        ) from error
    if record.p_signal is None or record.p_signal.shape != (header.sig_len, header.n_sig):
        raise InvalidECGError(
            f"signal file of WFDB record {base} does not hold the {header.sig_len} × {header.n_sig} "
            f"samples its header declares",
            reason="unreadable",
        )
    return recording_from_array(
        record.p_signal.T,
        record.fs,
        list(record.sig_name),
        parse_header_comments(record.comments or []),
        source=str(base),
    )


# --- HDF5 (CODE-15) ------------------------------------------------------------------------------


@contextmanager
def _open_tracings(path: Path):
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise InvalidECGError(f"{path} is not a readable HDF5 file ({error})", reason="unreadable") from error
    with handle:
        if "tracings" not in handle:
            raise InvalidECGError(
                f"HDF5 file {path} has no 'tracings' dataset (CODE-15 layout: N × samples × 12); "
                f"it holds {sorted(handle.keys())}",
                reason="unreadable",
            )
        tracings = handle["tracings"]
        if tracings.ndim != 3 or tracings.dtype.kind not in "fiu":
            raise InvalidECGError(
                f"'tracings' in {path} must be a numeric N × samples × leads array, "
                f"got shape {tracings.shape} dtype {tracings.dtype}",
                reason="unreadable",
            )
        exam_ids = handle["exam_id"] if "exam_id" in handle else None
        if exam_ids is not None and exam_ids.shape[0] != tracings.shape[0]:
            raise InvalidECGError(
                f"HDF5 file {path} has {tracings.shape[0]} tracings but {exam_ids.shape[0]} exam_ids",
                reason="unreadable",
            )
        yield tracings, exam_ids


def _row_index(tracings, record_index: int | None, path: Path) -> int:
    n_rows = tracings.shape[0]
    if record_index is None:
        if n_rows == 1:
            return 0
        raise InvalidECGError(f"HDF5 file {path} holds {n_rows} ECGs; pass record_index to pick one", reason="bad_argument")
    if not 0 <= record_index < n_rows:
        raise InvalidECGError(f"record_index {record_index} is out of range: {path} holds {n_rows} ECGs", reason="bad_argument")
    return record_index


def _hdf5_row(tracings, exam_ids, index: int, path: Path) -> Recording:
    tracing = np.asarray(tracings[index])  # (samples, leads)
    # CODE-15 pads short exams with zeros on both sides; ECG-FM strips them before anything else.
    nonzero = np.flatnonzero(np.any(tracing != 0, axis=1))
    if nonzero.size == 0:
        raise InvalidECGError(f"ECG {index} in {path} is all zeros (padding only)", reason="bad_signal")
    tracing = tracing[nonzero[0] : nonzero[-1] + 1]
    metadata: dict[str, Any] = {"record_index": index}
    if exam_ids is not None:
        metadata["exam_id"] = exam_ids[index].item()
    lead_names = list(STANDARD_LEADS) if tracing.shape[1] == len(STANDARD_LEADS) else [
        f"lead {i}" for i in range(tracing.shape[1])
    ]
    return recording_from_array(tracing.T, CODE15_FS, lead_names, metadata, source=f"{path}#{index}")


# --- NumPy ---------------------------------------------------------------------------------------


def _read_npy(path: Path, fs: float | None, lead_names: Sequence[str] | None) -> Recording:
    if fs is None or lead_names is None:
        raise InvalidECGError(
            f"{path}: a .npy file carries no sampling rate or lead names; pass fs= and lead_names=",
            reason="bad_argument",
        )
    try:
        signal = np.load(path, allow_pickle=False)
    except Exception as error:
        raise InvalidECGError(f"{path} is not a readable .npy array ({error})", reason="unreadable") from error
    if not isinstance(signal, np.ndarray):
        raise InvalidECGError(f"{path} does not hold a single array", reason="unreadable")
    return recording_from_array(signal, fs, lead_names, source=str(path))


def _read_npz(path: Path, fs: float | None, lead_names: Sequence[str] | None) -> Recording:
    try:
        with np.load(path, allow_pickle=False) as archive:
            if "signal" not in archive.files:
                raise InvalidECGError(
                    f"{path} has no 'signal' array (keys: {sorted(archive.files)}); expected "
                    f"'signal' (leads, samples) and optionally 'fs' and 'lead_names'",
                    reason="unreadable",
                )
            signal = archive["signal"]
            file_fs = archive["fs"].item() if "fs" in archive.files else None
            file_leads = archive["lead_names"].tolist() if "lead_names" in archive.files else None
    except InvalidECGError:
        raise
    except Exception as error:
        raise InvalidECGError(f"{path} is not a readable .npz archive ({error})", reason="unreadable") from error
    fs = file_fs if fs is None else fs
    lead_names = file_leads if lead_names is None else lead_names
    if fs is None or lead_names is None:
        raise InvalidECGError(
            f"{path} stores no {'fs' if fs is None else 'lead_names'}; pass it to read_ecg",
            reason="bad_argument",
        )
    return recording_from_array(signal, fs, lead_names, source=str(path))


# --- dispatch ------------------------------------------------------------------------------------


def _locate(path: Path) -> tuple[str, Path]:
    """(reader kind, the path that reader takes) for a user-supplied path."""
    if path.with_name(path.name + ".hea").is_file():  # a record name, even one with dots in it
        return "wfdb", path
    suffix = path.suffix.lower()
    if suffix in _WFDB_SUFFIXES:
        base = path.with_suffix("")
        if not base.with_name(base.name + ".hea").is_file():
            if suffix == ".hea" or path.exists():
                raise InvalidECGError(
                    f"WFDB header not found: {base}.hea (a WFDB record needs its .hea header "
                    f"next to its signal file)",
                    reason="not_found",
                )
            raise InvalidECGError(f"ECG file not found: {path}", reason="not_found")
        return "wfdb", base
    if not path.is_file():
        raise InvalidECGError(f"ECG file not found: {path} (nor a WFDB record {path}.hea)", reason="not_found")
    if suffix in _HDF5_SUFFIXES:
        return "hdf5", path
    if suffix in (".npy", ".npz"):
        return suffix[1:], path
    export = sniff_format(path) or EXPORT_EXTENSIONS.get(suffix)  # content first, then the extension
    if export is not None:
        return export, path
    exports = ", ".join(label for _, _, label in EXPORT_FORMATS.values())
    raise InvalidECGError(
        f"unknown ECG file type {suffix or '(no extension)'!s} for {path}; supported: WFDB "
        f"(.hea + .dat/.mat), HDF5 (.h5, .hdf5), NumPy (.npy, .npz), and by content {exports}",
        reason="unreadable",
    )
