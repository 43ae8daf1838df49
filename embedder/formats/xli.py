"""Philips XLI waveform compression: per lead, an 8-byte header, 10-bit LZW, then a second-order
delta code, decoded with numba (the pure-Python ``sierraecg`` package takes 132 ms per file).

Our own decoder rather than the ``sierraecg`` package's: sierraecg 0.4.0 stores each reconstructed
sample into an int16 NumPy array, which raises OverflowError under NumPy 2 when a delta step leaves
the int16 range (``philipsecg104_cardiac_science_deid_3.xml`` does). Philips' C reference keeps
these values in 16-bit integers, so they wrap; ``_undelta`` wraps them the same way. On the files
where sierraecg works, both decoders agree bit for bit (tests/embedder/test_formats.py).
"""

from __future__ import annotations

import numba
import numpy as np

from ecg_atlas.errors import InvalidECGError

LZW_BITS = 10
_HEADER = 8


def xli_decode(data: bytes, n_leads: int, n_samples: int, what: str) -> list[np.ndarray]:
    """``n_leads`` int16 arrays from the decoded ``parsedwaveforms`` bytes (files may hold more
    chunks than leads; the rest are ignored). A lead that decodes to more than the ``n_samples``
    the header declares is refused as soon as it does, so no file can blow the decoder up."""
    buffer = np.frombuffer(data, dtype=np.uint8)
    leads, offset = [], 0
    while offset < len(data) and len(leads) < n_leads:
        if offset + _HEADER > len(data):
            raise InvalidECGError(f"{what}: XLI chunk header of lead {len(leads) + 1} is cut off", reason="truncated")
        size = int.from_bytes(data[offset:offset + 4], "little", signed=True)
        start = int.from_bytes(data[offset + 6:offset + 8], "little", signed=True)
        offset += _HEADER
        if size < 0 or offset + size > len(data):
            raise InvalidECGError(f"{what}: XLI chunk of lead {len(leads) + 1} declares {size} bytes, "
                                  f"{len(data) - offset} remain", reason="truncated")
        decoded, complete = _lzw_decode(buffer[offset:offset + size], 2 * n_samples + 1)
        if not complete:
            raise InvalidECGError(f"{what}: XLI data of lead {len(leads) + 1} hold more than the {n_samples} "
                                  f"samples the header declares", reason="unreadable")
        offset += size
        leads.append(_undelta(decoded, start))
    if len(leads) != n_leads:
        raise InvalidECGError(f"{what}: the header declares {n_leads} leads but the XLI data holds "
                              f"{len(leads)}", reason="lead_count_mismatch")
    return leads


@numba.njit(cache=True, nogil=True)
def _lzw_decode(chunk: np.ndarray, limit: int):  # pragma: no cover - compiled
    """10-bit LZW (MSB-first codes, 256 literal codes, table of 1022 entries): (bytes, whether
    they fitted in ``limit``)."""
    max_code = (1 << LZW_BITS) - 2
    # every table entry is (prefix code, last byte, length, first byte); strings rebuilt on output
    prefix = np.full(max_code + 1, -1, np.int32)
    last = np.zeros(max_code + 1, np.uint8)
    length = np.ones(max_code + 1, np.int32)
    first = np.zeros(max_code + 1, np.uint8)
    for code in range(256):
        last[code] = code
        first[code] = code
    out = np.empty(limit, np.uint8)
    n_out = 0
    next_code = 256
    previous = -1
    bit_buffer = 0
    bit_count = 0
    position = 0
    while True:
        while bit_count < LZW_BITS and position < chunk.size:
            bit_buffer = (bit_buffer << 8) | chunk[position]
            position += 1
            bit_count += 8
        if bit_count < LZW_BITS:
            break
        bit_count -= LZW_BITS
        code = (bit_buffer >> bit_count) & ((1 << LZW_BITS) - 1)
        bit_buffer &= (1 << bit_count) - 1
        if code > max_code:
            break
        if code >= next_code:  # the KwKwK case: previous string + its own first byte
            if previous < 0 or code > next_code:  # a code past the table: corrupt data, stop here
                break  # (decoding it would later redefine a table entry others point through)
            entry_first = first[previous]
            entry_length = length[previous] + 1
        else:
            entry_first = first[code]
            entry_length = length[code]
        if n_out + entry_length > limit:
            return out[:n_out], False
        # write the string backwards from its last byte
        if code >= next_code:
            out[n_out + entry_length - 1] = entry_first
            walk = previous
            write = n_out + entry_length - 2
        else:
            walk = code
            write = n_out + entry_length - 1
        while walk >= 0:
            out[write] = last[walk]
            write -= 1
            walk = prefix[walk]
        if previous >= 0 and next_code <= max_code:
            prefix[next_code] = previous
            last[next_code] = entry_first
            length[next_code] = length[previous] + 1
            first[next_code] = first[previous]
            next_code += 1
        previous = code
        n_out += entry_length
    return out[:n_out], True


@numba.njit(cache=True, nogil=True)
def _undelta(decoded: np.ndarray, start: int) -> np.ndarray:  # pragma: no cover - compiled
    """Bytes -> int16 deltas (high bytes first half, low bytes second) -> samples, int16 wrap."""
    n = (decoded.size + 1) // 2  # an odd byte count is padded with a zero low byte
    samples = np.empty(n, np.int16)
    for i in range(n):
        low = decoded[n + i] if n + i < decoded.size else 0
        samples[i] = np.int16(np.uint16((np.uint16(decoded[i]) << 8) | low))
    if n < 3:
        return samples
    x = np.int32(samples[0])
    y = np.int32(samples[1])
    previous = np.int32(start)
    for i in range(2, n):
        z = np.int16(2 * y - x - previous)  # wraps like the C reference's 16-bit arithmetic
        previous = np.int32(samples[i]) - 64
        samples[i] = z
        x = y
        y = np.int32(z)
    return samples
