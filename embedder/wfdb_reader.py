"""A direct reader for the WFDB records ECG collections are made of, with ``wfdb`` as the fallback.

``wfdb.rdrecord`` parses each header through a pandas table lookup per field and value, which
costs 5–15 ms for a 12-lead header: more than embedding the ECG with a small encoder, and it is on
the client's side of every ingest. Almost every ECG record in circulation is one segment of
format 16 or 212 signals in one file (PhysioNet Challenge ``.mat`` files are format 16 after a
24-byte MATLAB preamble). This module reads exactly that subset with numpy and returns ``None``
for anything else (multi-segment records, other formats, samples per frame > 1, skew, missing
signal length, a header it cannot parse, a data file that is missing or short), so the caller
falls back to ``wfdb`` and its error messages. Two things it refuses outright, for both paths,
before any signal file is opened: a signal or segment file named by a path (``../x.dat``,
``/etc/x``: a record's files sit in its header's folder) and a header declaring more samples
than one ECG may hold (``MAX_VALUES``). The header grammar is wfdb's own
(``wfdb.io.header.rx_record`` / ``rx_signal``), and so are the defaults: fs 250 Hz, gain 200
when 0 or absent, baseline = ADC zero when absent. A test reads every record of the sample corpus
both ways and requires identical samples, names, rates and comments.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ecg_atlas.embedder.formats.common import MAX_HEADER_BYTES, check_file_size, check_size
from ecg_atlas.errors import InvalidECGError

#: Digital value wfdb reads as NaN (an invalid sample), by format.
INVALID_SAMPLE = {"16": -32768, "212": -2048}
DEFAULT_FS = 250
DEFAULT_GAIN = 200.0


@dataclass(frozen=True)
class WfdbRecord:
    digital: np.ndarray  # (samples, signals) int16 digital samples, as stored
    gains: np.ndarray  # (signals,) float64 digital units per physical unit
    baselines: np.ndarray  # (signals,) int64 digital value of 0
    invalid: np.ndarray  # (signals,) int64 digital value wfdb reads as NaN
    fs: float
    sig_name: list[str]
    comments: list[str]

    @property
    def p_signal(self) -> np.ndarray:
        """(samples, signals) float64 physical samples, NaN where a sample is invalid (as wfdb)."""
        physical = self.digital.astype(np.float64)
        physical -= self.baselines
        physical /= self.gains
        physical[self.digital == self.invalid] = np.nan
        return physical

    def uniform_digital(self) -> tuple[np.ndarray, float, int] | None:
        """((signals, samples) int16, gain, baseline) when every signal has the same gain and no
        sample is invalid: the record exactly as int16 samples with one gain; else ``None``."""
        gain = self.gains[0]
        if (self.gains != gain).any() or (self.digital == self.invalid).any():
            return None
        samples = np.ascontiguousarray(self.digital.T)
        baseline = int(self.baselines[0])
        if (self.baselines != baseline).any():  # one baseline per lead: subtract it here if int16 holds the result
            shifted = samples.astype(np.int32) - self.baselines[:, None].astype(np.int32)
            if shifted.min() < -32768 or shifted.max() > 32767:
                return None
            samples, baseline = shifted.astype(np.int16), 0
        return samples, float(gain), baseline


@dataclass(frozen=True)
class _Signal:
    file_name: str
    fmt: str
    byte_offset: int
    gain: float
    baseline: int
    name: str


def read_wfdb_record(base: Path) -> WfdbRecord | None:
    """Read ``base``.hea and its data file when they are in the supported subset, else ``None``."""
    from wfdb.io.header import rx_record, rx_signal

    header = base.with_name(base.name + ".hea")
    try:
        check_file_size(header, "WFDB header", MAX_HEADER_BYTES)
        text = header.read_bytes().decode("ascii", errors="ignore")
    except OSError:
        return None
    lines, comments = [], []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#"):
            comments.append(line.strip(" \t#"))
        elif line:
            lines.append(line)
    if not lines:
        return None
    for line in lines[1:]:  # signal (or segment) lines: their first field is a file name
        check_file_name(line.split()[0], base)
    record = rx_record.match(lines[0])
    if record is not None and record["sig_len"] and record["n_sig"]:
        check_size(int(record["n_sig"]), int(record["sig_len"]), f"WFDB record {base}")
    if record is None or record["n_seg"] or not record["sig_len"] or not record["n_sig"]:
        return None
    n_sig, sig_len = int(record["n_sig"]), int(record["sig_len"])
    if n_sig == 0 or sig_len == 0 or len(lines) - 1 != n_sig:
        return None
    try:
        fs: float = float(record["fs"]) if record["fs"] else DEFAULT_FS
    except ValueError:
        return None
    if round(fs, 8) == float(int(fs)):
        fs = int(fs)
    signals = []
    for line in lines[1:]:
        match = rx_signal.match(line)
        if match is None or match["fmt"] not in INVALID_SAMPLE or match["samps_per_frame"] or match["skew"]:
            return None
        try:
            gain = float(match["adc_gain"]) if match["adc_gain"] else DEFAULT_GAIN
            if match["baseline"]:
                baseline = int(match["baseline"])
            else:
                baseline = int(match["adc_zero"]) if match["adc_zero"] else 0
        except ValueError:
            return None
        signals.append(_Signal(match["file_name"], match["fmt"], int(match["byte_offset"] or 0),
                               DEFAULT_GAIN if gain == 0 else gain, baseline, match["sig_name"]))
    digital = _read_files(base.parent, signals, sig_len)
    if digital is None:
        return None
    return WfdbRecord(digital, np.array([s.gain for s in signals], dtype=np.float64),
                      np.array([s.baseline for s in signals], dtype=np.int64),
                      np.array([INVALID_SAMPLE[s.fmt] for s in signals], dtype=np.int64),
                      fs, [s.name for s in signals], comments)


def check_file_name(name: str, base: Path) -> None:
    """Refuse a signal or segment file name that is a path: a record reads only files in its own
    header's folder (``..``, a path separator or an absolute path would read any file)."""
    if "/" in name or "\\" in name or name in (".", "..") or Path(name).is_absolute():
        raise InvalidECGError(f"WFDB header {base}.hea names the file {name!r}; a record's signal files must "
                              f"be in the header's own folder (paths are not followed)", reason="unsupported")


def _read_files(directory: Path, signals: list[_Signal], sig_len: int) -> np.ndarray | None:
    """(sig_len, n_sig) int16 digital samples; signals that share a file are interleaved in it."""
    groups: dict[str, list[int]] = {}
    for i, s in enumerate(signals):
        groups.setdefault(s.file_name, []).append(i)
    out = None if len(groups) == 1 else np.empty((sig_len, len(signals)), dtype=np.int16)
    for file_name, channels in groups.items():
        first = signals[channels[0]]
        if file_name == "~" or any((signals[c].fmt, signals[c].byte_offset) != (first.fmt, first.byte_offset)
                                   for c in channels):
            return None
        n = sig_len * len(channels)
        size = n * 2 if first.fmt == "16" else (n * 3 + 1) // 2
        try:
            with open(directory / file_name, "rb") as handle:
                handle.seek(first.byte_offset)
                raw = handle.read(size)
        except OSError:
            return None
        if len(raw) < size:
            return None
        samples = (_decode_16(raw, n) if first.fmt == "16" else _decode_212(raw, n)).reshape(sig_len, len(channels))
        if out is None:  # one file holding every signal in order: its samples are the record
            return samples
        out[:, channels] = samples
    return out


def _decode_16(raw: bytes, n: int) -> np.ndarray:
    return np.frombuffer(raw, dtype="<i2", count=n)


def _decode_212(raw: bytes, n: int) -> np.ndarray:
    """Format 212: two 12-bit two's-complement samples in three bytes (low byte, shared nibbles, low byte)."""
    data = np.frombuffer(raw, dtype=np.uint8)
    if len(data) % 3:
        data = np.concatenate([data, np.zeros(3 - len(data) % 3, dtype=np.uint8)])
    triples = data.reshape(-1, 3).astype(np.int32)
    samples = np.empty(len(triples) * 2, dtype=np.int32)
    samples[0::2] = triples[:, 0] | ((triples[:, 1] & 0x0F) << 8)
    samples[1::2] = triples[:, 2] | ((triples[:, 1] & 0xF0) << 4)
    samples[samples > 2047] -= 4096
    return samples[:n].astype(np.int16)
