"""SCP-ECG (EN 1064 / ISO 11073-91064): sections 3 (leads) and 6 (rhythm data), in mV.

Rhythm data are Huffman coded with the standard's default table (or stored raw), as first or
second differences; where section 3 flags reference-beat subtraction, the reference beat
(section 5) is added back at every QRS that section 4 lists for it. Files that do not follow the
standard's framing (file length, section 0 pointer table, CRC-CCITT) are refused as
``non_conformant``: a handheld export that merely borrows the ``.scp`` extension must not be
decoded by guesswork. Custom Huffman tables and bimodal compression are refused (``unsupported``).
A section 3 that declares one sample per lead more than section 6 holds (a writer's off-by-one,
which BioSig reads) gives the stored samples and a warning; more missing is ``truncated``.
"""

from __future__ import annotations

import binascii
import datetime as dt
import logging
import struct
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

from ecg_atlas.embedder.recording import Recording
from ecg_atlas.errors import InvalidECGError

from .common import SCP_LEAD_CODES, build_recording, check_size, device_name, iso_time, parse_age, read_bounded

logger = logging.getLogger(__name__)

WHAT = "SCP-ECG"
DEFAULT_HUFFMAN = 19999
_SECTION_HEADER = 16
#: Section 1 tag 14, byte 7: manufacturer code (EN 1064 table 7).
MANUFACTURERS = {1: "Burdick", 2: "Cambridge Heart", 3: "Compumed", 4: "Datamed", 5: "Fukuda", 6: "Hewlett-Packard",
                 7: "Marquette", 8: "Mortara", 9: "Nihon Kohden", 10: "Okin", 11: "Quinton", 12: "Siemens",
                 13: "Spacelabs", 14: "Telemed", 15: "Hellige", 16: "ESA-OTE", 17: "Schiller",
                 18: "Picker-Schwarzer", 19: "Elettronica-Trentina", 20: "Zwonitz"}
_AGE_UNITS = {1: "years", 2: "months", 3: "weeks", 4: "days", 5: "hours"}


@dataclass(frozen=True)
class _Encoding:
    avm_nv: int        # amplitude value multiplier, nV per unit
    interval_us: int   # sample interval
    differences: int   # 0 none, 1 first, 2 second
    byte_counts: tuple[int, ...]
    data_at: int       # file offset of the first lead's bytes


def read_scp(path: Path) -> Recording:
    what = f"{WHAT} file {path}"
    data = read_bounded(path, WHAT)
    sections = _sections(data, what)
    if 6 not in sections:
        raise InvalidECGError(f"{what} has no section 6 (rhythm data)", reason="no_waveform")
    if 3 not in sections:
        raise InvalidECGError(f"{what} has no section 3 (lead definitions)", reason="no_waveform")
    n_leads, flags, lead_ranges, lead_codes = _leads(data, sections[3], what)
    if 2 in sections:
        tables = struct.unpack_from("<H", data, sections[2][0])[0]
        if tables != DEFAULT_HUFFMAN:
            raise InvalidECGError(f"{what} uses {tables} custom Huffman table(s); only the standard's default "
                                  f"table is supported", reason="unsupported")
    huffman = 2 in sections
    rhythm = _encoding(data, sections[6], n_leads, what, rhythm=True)
    if len(set(lead_ranges)) > 1:
        raise InvalidECGError(f"{what}: its leads cover different sample ranges (recorded in sequence, not "
                              f"simultaneously); not supported", reason="unsupported")
    counts = [end - start + 1 for start, end in lead_ranges]
    check_size(n_leads, max(counts), what)
    leads = _decode_leads(data, rhythm, counts, huffman, what, one_short=True)
    stored = min(lead.size for lead in leads)
    if stored < max(counts):  # a writer's off-by-one (BioSig reads these too): keep what is stored
        logger.warning("SCP-ECG section 3 declares %d samples per lead but section 6 holds %d; reading the "
                       "%d stored", max(counts), stored, stored)
        leads = [lead[:stored] for lead in leads]
    if flags & 1:  # reference-beat subtraction: rhythm data are residuals around each QRS
        _add_reference_beats(data, sections, leads, rhythm, n_leads, huffman, what)
    factor = rhythm.avm_nv * 1e-6  # nV -> mV
    names = [SCP_LEAD_CODES.get(code, f"lead code {code}") for code in lead_codes]
    metadata, patient_id = _demographics(data, sections.get(1))
    return build_recording([lead * factor for lead in leads], names, 1e6 / rhythm.interval_us,
                           declared_leads=None, what=what, source=str(path), metadata=metadata, patient_id=patient_id)


def _sections(data: bytes, what: str) -> dict[int, tuple[int, int]]:
    """Section id -> (data offset, data length), after checking the file's framing."""
    if len(data) < 6 + _SECTION_HEADER:
        raise InvalidECGError(f"{what} is {len(data)} bytes, too short for an SCP-ECG file", reason="truncated")
    crc, declared = struct.unpack_from("<HI", data, 0)
    marked = data[6 + 10:6 + 16] == b"SCPECG"
    if declared > len(data) and marked:
        raise InvalidECGError(f"{what} declares {declared} bytes but has {len(data)}", reason="truncated")
    section0_id = struct.unpack_from("<H", data, 6 + 2)[0]
    if declared != len(data) or section0_id != 0:
        raise InvalidECGError(
            f"{what} does not follow EN 1064: its file-length field says {declared} bytes but the file has "
            f"{len(data)}, and section 0 (the pointer table) is {'present' if section0_id == 0 else 'missing'}",
            reason="non_conformant")
    if binascii.crc_hqx(data[2:], 0xFFFF) != crc:
        raise InvalidECGError(f"{what} fails its CRC-CCITT check: the file is damaged", reason="corrupt")
    section0_length = struct.unpack_from("<I", data, 6 + 4)[0]
    sections: dict[int, tuple[int, int]] = {}
    for at in range(6 + _SECTION_HEADER, min(6 + section0_length, len(data)) - 9, 10):
        section_id, length, index = struct.unpack_from("<HII", data, at)
        if length == 0 or section_id == 0:
            continue
        start = index - 1  # pointers are 1-based
        if start < 0 or start + length > len(data) or length < _SECTION_HEADER:
            raise InvalidECGError(f"{what}: section {section_id} points outside the file", reason="truncated")
        sections[section_id] = (start + _SECTION_HEADER, length - _SECTION_HEADER)
    return sections


def _leads(data: bytes, section: tuple[int, int], what: str):
    at, length = section
    n_leads, flags = data[at], data[at + 1]
    if n_leads == 0 or 2 + 9 * n_leads > length:
        raise InvalidECGError(f"{what}: section 3 declares {n_leads} leads but holds definitions for "
                              f"{max(0, (length - 2) // 9)}", reason="lead_count_mismatch")
    ranges, codes = [], []
    for i in range(n_leads):
        start, end, code = struct.unpack_from("<IIB", data, at + 2 + 9 * i)
        if end < start or start < 1:
            raise InvalidECGError(f"{what}: lead {i + 1} spans samples {start}-{end}", reason="unreadable")
        ranges.append((start, end))
        codes.append(code)
    return n_leads, flags, ranges, codes


def _encoding(data: bytes, section: tuple[int, int], n_leads: int, what: str, *, rhythm: bool) -> _Encoding:
    at, length = section
    avm, interval, differences, bimodal = struct.unpack_from("<HHBB", data, at)
    if 6 + 2 * n_leads > length:
        raise InvalidECGError(f"{what}: section {6 if rhythm else 5} has byte counts for fewer than the "
                              f"{n_leads} leads of section 3", reason="lead_count_mismatch")
    if interval == 0:
        raise InvalidECGError(f"{what}: sample interval is 0 µs", reason="bad_sampling_rate")
    if avm == 0:
        raise InvalidECGError(f"{what}: amplitude value multiplier is 0 nV", reason="bad_units")
    if differences not in (0, 1, 2):
        raise InvalidECGError(f"{what}: difference encoding {differences} is not 0, 1 or 2", reason="unreadable")
    if rhythm and bimodal:
        raise InvalidECGError(f"{what} uses bimodal compression (decimated rhythm data); not supported",
                              reason="unsupported")
    counts = struct.unpack_from(f"<{n_leads}H", data, at + 6)
    if 6 + 2 * n_leads + sum(counts) > length:
        raise InvalidECGError(f"{what}: section {6 if rhythm else 5} data run past its end", reason="truncated")
    return _Encoding(avm, interval, differences, counts, at + 6 + 2 * n_leads)


def _decode_leads(data: bytes, encoding: _Encoding, counts: list[int], huffman: bool, what: str, *,
                  one_short: bool = False) -> list[np.ndarray]:
    """Each lead's samples; with ``one_short``, a lead whose data end one sample before the count
    that section 3 declares is returned one sample short instead of refused."""
    buffer = np.frombuffer(data, np.uint8)
    leads, at = [], encoding.data_at
    for lead, (n_bytes, n_samples) in enumerate(zip(encoding.byte_counts, counts)):
        chunk = buffer[at:at + n_bytes]
        at += n_bytes
        if huffman:
            values, decoded = _huffman_default(chunk, n_samples)
        else:
            values = chunk[:2 * (n_bytes // 2)].view("<i2").astype(np.int32)[:n_samples]
            decoded = values.size
        if decoded < n_samples - (1 if one_short else 0) or decoded < 1:
            raise InvalidECGError(f"{what}: lead {lead + 1} decodes to {decoded} samples, {n_samples} declared",
                                  reason="truncated")
        leads.append(_undifference(values[:decoded], encoding.differences).astype(np.float64))
    return leads


def _add_reference_beats(data, sections, leads, rhythm: _Encoding, n_leads: int, huffman: bool, what: str) -> None:
    if 4 not in sections or 5 not in sections:
        raise InvalidECGError(f"{what} flags reference-beat subtraction but lacks section 4 or 5", reason="truncated")
    at, length = sections[4]
    beat_length, fiducial, n_qrs = struct.unpack_from("<HHH", data, at)
    if 6 + 14 * n_qrs > length:
        raise InvalidECGError(f"{what}: section 4 lists {n_qrs} QRS complexes it has no room for", reason="truncated")
    reference = _encoding(data, sections[5], n_leads, what, rhythm=False)
    if reference.interval_us != rhythm.interval_us:
        raise InvalidECGError(f"{what}: reference beat and rhythm data have different sampling intervals",
                              reason="unsupported")
    beats = _decode_leads(data, reference, [beat_length] * n_leads, huffman, what)
    scale = reference.avm_nv / rhythm.avm_nv
    for i in range(n_qrs):
        beat_type, start, qrs_fiducial, end = struct.unpack_from("<HIII", data, at + 6 + 14 * i)
        if beat_type != 0 or start == 0:
            continue  # only type-0 beats were subtracted
        for lead, beat in zip(leads, beats):
            first, last = start - 1, min(end, lead.size)  # 1-based, inclusive
            offset = fiducial - qrs_fiducial  # rhythm sample s pairs with beat sample s + offset
            lo, hi = max(first, -offset), min(last, beat.size - offset)
            if lo < hi:
                lead[lo:hi] += beat[lo + offset:hi + offset] * scale


@numba.njit(cache=True, nogil=True)
def _huffman_default(chunk: np.ndarray, n_samples: int):  # pragma: no cover - compiled
    """EN 1064's default table: '0' -> 0; k ones, '0', sign -> ±k (k = 1..8); nine ones + '0' +
    8-bit value; ten ones + 16-bit value. Bits are read MSB first."""
    out = np.zeros(n_samples, np.int32)
    n_bits = chunk.size * 8
    bit = 0
    count = 0
    while count < n_samples and bit < n_bits:
        ones = 0
        while ones < 10 and bit < n_bits and (chunk[bit >> 3] >> (7 - (bit & 7))) & 1:
            ones += 1
            bit += 1
        if ones < 9:
            if ones == 0:
                bit += 1  # the '0'
                out[count] = 0
            else:
                bit += 1  # the '0' after the ones
                if bit >= n_bits:
                    break
                negative = (chunk[bit >> 3] >> (7 - (bit & 7))) & 1
                bit += 1
                out[count] = -ones if negative else ones
        else:
            if ones == 9:
                bit += 1  # the '0'
                width = 8
            else:
                width = 16
            if bit + width > n_bits:
                break
            value = 0
            for _ in range(width):
                value = (value << 1) | ((chunk[bit >> 3] >> (7 - (bit & 7))) & 1)
                bit += 1
            if value >= 1 << (width - 1):
                value -= 1 << width
            out[count] = value
        count += 1
    return out, count


def _undifference(values: np.ndarray, order: int) -> np.ndarray:
    if order == 1:
        return np.cumsum(values, dtype=np.int64)
    if order == 2:
        return _second_order(values.astype(np.int64))
    return values.astype(np.int64)


@numba.njit(cache=True, nogil=True)
def _second_order(values: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
    out = values.copy()
    for n in range(2, out.size):
        out[n] = values[n] + 2 * out[n - 1] - out[n - 2]
    return out


def _demographics(data: bytes, section: tuple[int, int] | None) -> tuple[dict, str | None]:
    """Age, sex, acquisition time, device and the patient id from section 1's tags.

    Names (tags 0, 1, 3), birth date (5) and free text are skipped. A damaged tag is ignored, not
    fatal: anonymisers rewrite section 1 (dates big-endian, fields overwritten) and leave the
    signal intact.
    """
    if section is None:
        return {}, None
    tags: dict[int, bytes] = {}
    at, end = section[0], section[0] + section[1]
    while at + 3 <= end:
        tag, length = data[at], struct.unpack_from("<H", data, at + 1)[0]
        if tag == 255:
            break
        tags.setdefault(tag, data[at + 3:at + 3 + length])
        at += 3 + length
    metadata: dict = {}
    if len(tags.get(4, b"")) >= 3:
        value, unit = struct.unpack_from("<HB", tags[4])
        metadata["age"] = parse_age(value, _AGE_UNITS.get(unit, "?"))
    if tags.get(8):
        metadata["sex"] = {1: "M", 2: "F"}.get(tags[8][0])
    date = time = None
    if len(tags.get(25, b"")) >= 4:
        year, month, day = struct.unpack_from("<HBB", tags[25])
        try:
            date = dt.date(year, month, day)
        except ValueError:
            date = None
    if len(tags.get(26, b"")) >= 3:
        try:
            time = dt.time(*tags[26][:3])
        except ValueError:
            time = None
    metadata["acquisition_time"] = iso_time(date, time)
    device = tags.get(14, b"")
    if len(device) >= 14:
        model = device[8:14].split(b"\0")[0].decode("latin-1").strip()
        metadata["device"] = device_name(MANUFACTURERS.get(device[7]), model)
    patient_id = tags.get(2, b"").split(b"\0")[0].decode("latin-1").strip() or None
    return metadata, patient_id
