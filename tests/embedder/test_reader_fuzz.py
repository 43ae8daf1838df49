"""Seeded fuzzing of the readers: mutations of every real export in ../shared/data/formats, of a
sample of the WFDB records in ../shared/data/ecg, and of a CODE-15-style HDF5 file made from one
(the web's upload path reads HDF5 too). Every outcome must be a Recording or an
InvalidECGError with a reason from the readers' set: no other exception type escapes a reader,
whatever a damaged or hostile file holds (issue 24)."""

from __future__ import annotations

import binascii
import re
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from ecg_atlas.embedder.readers import iter_hdf5_ecgs, read_ecg
from ecg_atlas.errors import InvalidECGError

#: Every reason a reader gives (README "Reading files").
READER_REASONS = {"unreadable", "truncated", "too_large", "unsupported", "not_found", "no_waveform",
                  "lead_count_mismatch", "bad_units", "bad_sampling_rate", "bad_signal", "corrupt",
                  "non_conformant", "unsafe_xml"}
MUTATIONS_PER_EXPORT = 48
MUTATIONS_PER_RECORD = 12
MUTATIONS_PER_HDF5 = 60
RECORDS_PER_DATASET = 1
#: Values that break parsers: zero, negative, huge, not a number, empty.
NASTY_NUMBERS = ["0", "-1", "1", "99999999", "4294967296", "1e308", "-1e308", "nan", "inf", "", "-32768", "65535"]
NASTY_INTS = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF]
_NUMBER = re.compile(rb"-?\d+(?:\.\d+)?")

Mutation = Callable[[bytes, np.random.Generator], tuple[bytes, str]]


def _flip_bits(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    out = bytearray(data)
    positions = rng.integers(0, len(out), size=int(rng.integers(1, 17)))
    for position in positions:
        out[position] ^= 1 << int(rng.integers(0, 8))
    return bytes(out), f"bit flips at {sorted(positions.tolist())}"


def _truncate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    cut = int(rng.integers(0, min(len(data), 2048))) if rng.random() < 0.5 else int(rng.integers(0, len(data)))
    return data[:cut], f"cut at {cut}"


def _insert(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    at = int(rng.integers(0, len(data)))
    extra = rng.integers(0, 256, size=int(rng.integers(1, 65)), dtype=np.uint8).tobytes()
    return data[:at] + extra + data[at:], f"{len(extra)} bytes inserted at {at}"


def _overwrite_number(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """A number in a text format (XML value, WFDB header field) replaced by a nasty one."""
    numbers = list(_NUMBER.finditer(data[:200_000]))
    if not numbers:
        return _flip_bits(data, rng)
    match = numbers[int(rng.integers(0, len(numbers)))]
    value = NASTY_NUMBERS[int(rng.integers(0, len(NASTY_NUMBERS)))].encode()
    return data[:match.start()] + value + data[match.end():], f"number at {match.start()} -> {value!r}"


def _overwrite_binary_field(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """A 1-, 2- or 4-byte little-endian field in the header region set to an extreme value."""
    width = [1, 2, 4][int(rng.integers(0, 3))]
    at = int(rng.integers(0, max(1, min(len(data), 4096) - width)))
    value = NASTY_INTS[int(rng.integers(0, len(NASTY_INTS)))] & ((1 << 8 * width) - 1)
    out = bytearray(data)
    out[at:at + width] = value.to_bytes(width, "little")
    return bytes(out), f"{width}-byte field at {at} -> {value:#x}"


_EDF_FIELDS = [(236, 8), (244, 8), (252, 4)]  # records, record duration, signals; per-signal fields below


def _overwrite_edf_field(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One of the EDF header's numeric ASCII fields (global or per signal) set to a nasty value."""
    try:
        n_signals = max(1, min(int(data[252:256]), 64))
    except ValueError:
        n_signals = 1
    fields = list(_EDF_FIELDS)
    for offset, width in ((104, 8), (112, 8), (120, 8), (128, 8), (216, 8)):  # phys min/max, dig min/max, samples
        fields += [(256 + n_signals * offset + width * i, width) for i in range(n_signals)]
    at, width = fields[int(rng.integers(0, len(fields)))]
    value = NASTY_NUMBERS[int(rng.integers(0, len(NASTY_NUMBERS)))].encode().ljust(width)[:width]
    return data[:at] + value + data[at + width:], f"EDF field at {at} -> {value!r}"


def _with_scp_crc(data: bytes) -> bytes:
    """The mutated SCP file with its CRC-CCITT recomputed, so decoding gets past the check."""
    if len(data) < 6:
        return data
    return struct.pack("<H", binascii.crc_hqx(data[2:], 0xFFFF)) + data[2:]


def _mutations(path: Path) -> list[Mutation]:
    generic: list[Mutation] = [_flip_bits, _truncate, _insert]
    suffix = path.suffix.lower()
    if suffix in (".xml", ".hea"):
        return [*generic, _overwrite_number, _overwrite_number]
    if suffix == ".edf":
        return [*generic, _overwrite_edf_field, _overwrite_edf_field]
    return [*generic, _overwrite_binary_field, _overwrite_binary_field]


def _read_all(path: Path) -> list:
    return list(iter_hdf5_ecgs(path)) if path.suffix == ".h5" else [read_ecg(path)]


def _outcome(path: Path) -> str | None:
    """None when reading ``path`` gives valid Recordings or a reason-coded refusal; else what happened."""
    try:
        recordings = _read_all(path)
    except InvalidECGError as error:
        return None if error.reason in READER_REASONS else f"InvalidECGError with reason {error.reason!r}: {error}"
    except Exception as error:  # what the test is for
        return f"{type(error).__name__}: {error}"
    for recording in recordings:
        signal = recording.signal
        if signal.ndim != 2 or signal.dtype != np.float32 or signal.shape[0] != len(recording.lead_names):
            return f"a Recording of shape {signal.shape} {signal.dtype} with {len(recording.lead_names)} lead names"
    return None


def _fuzz(source: Path, mutated: Path, count: int, seed: int, failures: list[str], *, scp: bool = False) -> None:
    original = source.read_bytes()
    rng = np.random.default_rng(seed)
    mutations = _mutations(source)
    for trial in range(count):
        mutation = mutations[trial % len(mutations)]
        data, description = mutation(original, rng)
        if scp and trial % 2:
            data, description = _with_scp_crc(data), description + " (CRC rewritten)"
        mutated.write_bytes(data)
        problem = _outcome(mutated)
        if problem:
            failures.append(f"{source.name} [seed {seed}, trial {trial}: {description}]: {problem}")


@pytest.mark.slow
def test_mutated_exports_are_read_or_refused_with_a_reason(tmp_path, shared_data):
    exports = sorted(p for p in (shared_data / "formats").glob("*/*") if p.is_file())
    assert len(exports) >= 16, exports
    failures: list[str] = []
    for seed, source in enumerate(exports):
        _fuzz(source, tmp_path / source.name, MUTATIONS_PER_EXPORT, seed, failures, scp=source.suffix == ".scp")
    assert not failures, "\n".join(failures)


def _sample_records(ecg_dir: Path) -> list[Path]:
    """The first RECORDS_PER_DATASET records (by name) of every dataset folder: .dat and .mat files,
    formats 16 and 212, the direct reader's and wfdb's paths."""
    records = []
    for dataset in sorted(p for p in ecg_dir.iterdir() if p.is_dir()):
        headers = sorted(dataset.glob("*.hea"))[:RECORDS_PER_DATASET]
        records += [h.with_suffix("") for h in headers]
    return records


@pytest.mark.slow
def test_mutated_wfdb_records_are_read_or_refused_with_a_reason(tmp_path, ecg_dir):
    records = _sample_records(ecg_dir)
    assert len(records) >= 8, records
    failures: list[str] = []
    for seed, record in enumerate(records):
        folder = tmp_path / record.parent.name
        folder.mkdir()
        files = [p for p in record.parent.glob(record.name + ".*")]
        for file in files:
            shutil.copy(file, folder / file.name)
        for file in files:  # the header, then the signal file, each mutated while the other is intact
            _fuzz(file, folder / file.name, MUTATIONS_PER_RECORD, 1000 + seed, failures)
            shutil.copy(file, folder / file.name)
    assert not failures, "\n".join(failures)


@pytest.mark.slow
def test_mutated_hdf5_files_are_read_or_refused_with_a_reason(tmp_path, ecg_dir):
    import h5py

    signal = read_ecg(ecg_dir / "code15" / "1111").signal
    source = tmp_path / "source.h5"
    with h5py.File(source, "w") as handle:  # compressed chunks of one row: the CODE-15 layout's variants
        handle.create_dataset("tracings", data=np.stack([signal.T] * 3), compression="gzip", chunks=(1, 1024, 12))
        handle["exam_id"] = np.array([1, 2, 3])
    failures: list[str] = []
    _fuzz(source, tmp_path / "mutated.h5", MUTATIONS_PER_HDF5, 2024, failures)
    assert not failures, "\n".join(failures)
