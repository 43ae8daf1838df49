"""Read an ECG from a file (WFDB, CODE-15 HDF5, NumPy, hospital exports) or an array into a ``Recording``.

Every reader returns the signal in the source's own units and lead names; reordering, resampling
and standardising are ``preprocess``'s job. Anything unreadable raises ``InvalidECGError`` with a
message that names the problem, and no other exception type escapes a reader. Sizes a file
declares are checked against the limits in ``formats/common.py`` before anything is allocated
for them. The path may appear in that message (it is the caller's own input) but never in log
records above DEBUG: file names can identify patients.
"""

from __future__ import annotations

import functools
import logging
import math
import re
import struct
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ecg_atlas.embedder.formats import EXTENSIONS as EXPORT_EXTENSIONS
from ecg_atlas.embedder.formats import FORMATS as EXPORT_FORMATS
from ecg_atlas.embedder.formats import read_export, sniff_format
from ecg_atlas.embedder.formats.common import (
    MAX_SIGNAL_BYTES,
    MAX_VALUES,
    check_file_size,
    check_size,
    decoder_errors,
)
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
      Both must be datasets stored in the file itself: an external or soft link, external
      storage, a virtual dataset or a filter plugin is refused (``unsupported``) before any
      data is read, as is a signal file outside a WFDB header's own folder.
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
    if kind in EXPORT_FORMATS:
        recording = read_export(kind, location)  # maps its decoders' errors itself
    else:
        with _refusing(kind, location):
            if kind == "wfdb":
                recording = _read_wfdb(location)
            elif kind == "hdf5":
                with _open_tracings(location) as (tracings, exam_ids):
                    recording = _hdf5_row(tracings, exam_ids, _row_index(tracings, record_index, location),
                                          location)
            elif kind == "npy":
                recording = _read_npy(location, fs, lead_names)
            else:
                recording = _read_npz(location, fs, lead_names)
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
            with _refusing("hdf5", location):  # not around the yield: the caller's errors are its own
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
    from .wfdb_reader import check_file_name, read_wfdb_record

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
    for name in (getattr(header, "file_name", None) or []) + (getattr(header, "seg_name", None) or []):
        check_file_name(str(name), base)  # read_wfdb_record checked the header's lines; this is wfdb's parse
    frames = max((int(f or 1) for f in getattr(header, "samps_per_frame", None) or [1]), default=1)
    check_size(header.n_sig, header.sig_len * max(frames, 1), f"WFDB record {base}")
    try:
        record = wfdb.rdrecord(str(base), physical=True)
    except FileNotFoundError as error:
        raise InvalidECGError(f"signal file of WFDB record {base} not found: {error.filename}",
                              reason="not_found") from error
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

#: Filters HDF5 decodes itself (deflate, shuffle, Fletcher-32, szip, n-bit, scale-offset) or h5py
#: registers (LZF); any other filter id would make HDF5 load a plugin library from disk.
_HDF5_BUILTIN_FILTERS = {1, 2, 3, 4, 5, 6, 32000}


@contextmanager
def _open_tracings(path: Path):
    """('tracings', 'exam_id' or None) of a CODE-15-style file, checked before any data is read:
    both must be datasets stored in this file (no link, external storage, virtual dataset or
    filter plugin makes HDF5 open another file), and one row must fit the size limits."""
    import h5py

    with _refusing("hdf5", path):
        try:
            handle = h5py.File(path, "r")
        except OSError as error:
            raise InvalidECGError(f"{path} is not a readable HDF5 file ({error})", reason="unreadable") from error
    with handle:
        with _refusing("hdf5", path):
            tracings = _in_file_dataset(handle, "tracings", path)
            if tracings is None:
                raise InvalidECGError(
                    f"HDF5 file {path} has no 'tracings' dataset (CODE-15 layout: N × samples × 12); "
                    f"it holds {sorted(handle.keys())}",
                    reason="unreadable",
                )
            if tracings.ndim != 3 or tracings.dtype.kind not in "fiu":
                raise InvalidECGError(
                    f"'tracings' in {path} must be a numeric N × samples × leads array, "
                    f"got shape {tracings.shape} dtype {tracings.dtype}",
                    reason="unreadable",
                )
            _check_hdf5_sizes(tracings, tracings.shape[1] * tracings.shape[2], path)
            exam_ids = _in_file_dataset(handle, "exam_id", path)
            if exam_ids is not None:
                text = h5py.check_string_dtype(exam_ids.dtype) is not None
                if exam_ids.ndim != 1 or not (exam_ids.dtype.kind in "iufS" or text):
                    raise InvalidECGError(
                        f"'exam_id' in {path} must be one integer or string per tracing, got shape "
                        f"{exam_ids.shape} dtype {exam_ids.dtype}",
                        reason="unreadable",
                    )
                if exam_ids.shape[0] != tracings.shape[0]:
                    raise InvalidECGError(
                        f"HDF5 file {path} has {tracings.shape[0]} tracings but {exam_ids.shape[0]} exam_ids",
                        reason="unreadable",
                    )
                _check_hdf5_sizes(exam_ids, 1, path)
        yield tracings, exam_ids


def _in_file_dataset(handle, name: str, path: Path):
    """Dataset ``name`` of ``handle`` if it is one stored in this file; None if there is no such
    link; refused (``unsupported``, naming the feature) if reading it would open another file.

    Only hard links are followed: an external link names another file, and a soft link is a path
    that can pass through one (CODE-15 files use neither)."""
    import h5py
    from h5py import h5d, h5l

    key = name.encode()
    if not handle.id.links.exists(key):
        return None
    link = handle.id.links.get_info(key).type
    if link == h5l.TYPE_EXTERNAL:
        raise InvalidECGError(f"'{name}' in HDF5 file {path} is an external link to another file; "
                              f"external links are not followed", reason="unsupported")
    if link != h5l.TYPE_HARD:
        kind = "soft" if link == h5l.TYPE_SOFT else "user-defined"
        raise InvalidECGError(f"'{name}' in HDF5 file {path} is a {kind} link; only datasets stored under "
                              f"that name are read", reason="unsupported")
    dataset = handle[name]
    if not isinstance(dataset, h5py.Dataset):
        raise InvalidECGError(f"'{name}' in HDF5 file {path} is a group, not a dataset", reason="unreadable")
    layout = dataset.id.get_create_plist()
    if layout.get_layout() == h5d.VIRTUAL:
        raise InvalidECGError(f"'{name}' in HDF5 file {path} is a virtual dataset (its data come from other "
                              f"files); virtual datasets are not read", reason="unsupported")
    if layout.get_external_count():
        raise InvalidECGError(f"'{name}' in HDF5 file {path} keeps its data in external files (HDF5 external "
                              f"storage); external storage is not read", reason="unsupported")
    for i in range(layout.get_nfilters()):
        filter_id = layout.get_filter(i)[0]
        if filter_id not in _HDF5_BUILTIN_FILTERS:
            raise InvalidECGError(f"'{name}' in HDF5 file {path} is compressed with HDF5 filter {filter_id}, "
                                  f"which needs a plugin library; only built-in filters are read",
                                  reason="unsupported")
    return dataset


def _check_hdf5_sizes(dataset, values_per_row: int, path: Path) -> None:
    """One row, and one chunk (decompressed whole to read any part of it), within the limits."""
    itemsize = dataset.dtype.itemsize
    if values_per_row > MAX_VALUES or values_per_row * itemsize > MAX_SIGNAL_BYTES:
        raise InvalidECGError(
            f"'{dataset.name.lstrip('/')}' in HDF5 file {path} declares rows of {values_per_row} values "
            f"({dataset.shape[1:]} {dataset.dtype}); one ECG may hold {MAX_VALUES} values "
            f"({MAX_SIGNAL_BYTES // 2**20} MiB)",
            reason="too_large",
        )
    if dataset.chunks is not None and math.prod(dataset.chunks) * itemsize > MAX_SIGNAL_BYTES:
        raise InvalidECGError(
            f"'{dataset.name.lstrip('/')}' in HDF5 file {path} is stored in chunks of {dataset.chunks} values; "
            f"chunks over {MAX_SIGNAL_BYTES // 2**20} MiB are refused",
            reason="too_large",
        )


def _row_index(tracings, record_index: int | None, path: Path) -> int:
    n_rows = tracings.shape[0]
    if record_index is None:
        if n_rows == 1:
            return 0
        raise InvalidECGError(f"HDF5 file {path} holds {n_rows} ECGs; pass record_index to pick one",
                              reason="bad_argument")
    if not 0 <= record_index < n_rows:
        raise InvalidECGError(f"record_index {record_index} is out of range: {path} holds {n_rows} ECGs",
                              reason="bad_argument")
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
        exam_id = exam_ids[index]
        exam_id = exam_id.item() if isinstance(exam_id, np.generic) else exam_id
        metadata["exam_id"] = exam_id.decode("utf-8", "replace") if isinstance(exam_id, bytes) else exam_id
    lead_names = list(STANDARD_LEADS) if tracing.shape[1] == len(STANDARD_LEADS) else [
        f"lead {i}" for i in range(tracing.shape[1])
    ]
    return recording_from_array(tracing.T, CODE15_FS, lead_names, metadata, source=f"{path}#{index}")


# --- NumPy ---------------------------------------------------------------------------------------

#: Bytes a .npy header may take before the array (NumPy writes 64-4096).
_NPY_HEADER_BYTES = 2**16
#: Central directory of an .npz: a few members take ~100 bytes each; a million tiny members would
#: take as much memory to list as a large ECG.
_NPZ_DIRECTORY_BYTES = 2**16


def _read_npy(path: Path, fs: float | None, lead_names: Sequence[str] | None) -> Recording:
    if fs is None or lead_names is None:
        raise InvalidECGError(
            f"{path}: a .npy file carries no sampling rate or lead names; pass fs= and lead_names=",
            reason="bad_argument",
        )
    check_file_size(path, "NumPy .npy", MAX_SIGNAL_BYTES + _NPY_HEADER_BYTES)
    try:
        signal = _load_npy(functools.partial(open, path, "rb"), path.stat().st_size, str(path))
    except InvalidECGError:
        raise
    except Exception as error:
        raise InvalidECGError(f"{path} is not a readable .npy array ({error})", reason="unreadable") from error
    return recording_from_array(signal, fs, lead_names, source=str(path))


def _read_npz(path: Path, fs: float | None, lead_names: Sequence[str] | None) -> Recording:
    import zipfile

    check_file_size(path, "NumPy .npz", MAX_SIGNAL_BYTES + _NPY_HEADER_BYTES + 2**20)
    _check_zip_directory(path)
    try:
        with zipfile.ZipFile(path) as archive:
            members = {info.filename.removesuffix(".npy"): info for info in archive.infolist()}
            if "signal" not in members:
                raise InvalidECGError(
                    f"{path} has no 'signal' array (keys: {sorted(members)}); expected "
                    f"'signal' (leads, samples) and optionally 'fs' and 'lead_names'",
                    reason="unreadable",
                )

            def load(key: str) -> np.ndarray:  # the zip's own sizes and the .npy header, then the data
                info = members[key]
                return _load_npy(lambda: archive.open(info), info.file_size, f"{path} member {info.filename!r}")

            signal = load("signal")
            file_fs = load("fs").item() if "fs" in members else None
            file_leads = load("lead_names").tolist() if "lead_names" in members else None
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


def _load_npy(opener, stored_bytes: int, what: str) -> np.ndarray:
    """The array of a .npy stream of ``stored_bytes`` bytes, once its header's shape and dtype are
    checked against the limits and against what is stored (NumPy allocates the declared array
    before reading a byte of it)."""
    from numpy.lib import format as npy

    if stored_bytes > MAX_SIGNAL_BYTES + _NPY_HEADER_BYTES:
        raise InvalidECGError(f"{what} holds {stored_bytes / 2**20:.0f} MiB; one ECG array may take "
                              f"{MAX_SIGNAL_BYTES // 2**20} MiB", reason="too_large")
    with opener() as stream:
        version = npy.read_magic(stream)
        if version not in ((1, 0), (2, 0)):
            raise InvalidECGError(f"{what} is .npy format version {version[0]}.{version[1]}; versions 1 and 2 "
                                  f"are read", reason="unsupported")
        read_header = npy.read_array_header_1_0 if version == (1, 0) else npy.read_array_header_2_0
        shape, _, dtype = read_header(stream)
        header_bytes = stream.tell()
    n_values = math.prod(shape)
    if dtype.hasobject:
        raise InvalidECGError(f"{what} holds Python objects (pickles are never loaded)", reason="unreadable")
    if n_values > MAX_VALUES or n_values * dtype.itemsize > MAX_SIGNAL_BYTES:
        raise InvalidECGError(f"{what} declares a {'×'.join(map(str, shape))} {dtype} array; one ECG may hold "
                              f"{MAX_VALUES} values ({MAX_SIGNAL_BYTES // 2**20} MiB)", reason="too_large")
    if header_bytes + n_values * dtype.itemsize > stored_bytes:
        raise InvalidECGError(f"{what} declares a {'×'.join(map(str, shape))} {dtype} array but holds "
                              f"{stored_bytes - header_bytes} bytes of data", reason="truncated")
    with opener() as stream:
        return npy.read_array(stream, allow_pickle=False)


def _check_zip_directory(path: Path) -> None:
    """Refuse a .npz whose zip central directory is too large to list (zipfile builds an object per
    entry): read from the end-of-central-directory record, before ``zipfile`` reads any of it."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        file.seek(max(0, size - (2**16 + 22)))
        tail = file.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or at + 22 > len(tail):
        raise InvalidECGError(f"{path} is not a readable .npz archive (no zip directory)", reason="unreadable")
    directory_bytes = struct.unpack_from("<L", tail, at + 12)[0]
    if directory_bytes > _NPZ_DIRECTORY_BYTES:  # 0xFFFFFFFF (zip64) included: an ECG never needs it
        raise InvalidECGError(f"{path} lists {directory_bytes} bytes of zip members; an ECG .npz holds a few "
                              f"arrays (at most {_NPZ_DIRECTORY_BYTES} bytes of listing)", reason="too_large")


# --- errors --------------------------------------------------------------------------------------

_KIND_LABELS = {"wfdb": "WFDB record", "hdf5": "HDF5 file", "npy": ".npy file", "npz": ".npz archive"}


def _refusing(kind: str, path: Path):
    """``decoder_errors`` for the non-export readers (h5py, wfdb, NumPy), as ``read_export`` uses it."""
    return decoder_errors(_KIND_LABELS.get(kind, kind), path)


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
