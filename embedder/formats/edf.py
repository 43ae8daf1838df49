"""EDF and EDF+ (European Data Format): the ECG channels, chosen by label, in mV.

pyedflib opens and checks the file and gives the channel headers; the samples are then read
from the data records in one NumPy pass. pyedflib's own ``readSignal`` reads channel by channel,
record by record: 146 ms for a Contec export of 37 855 one-sample records, against 1.4 ms here.
Non-ECG channels (EEG, respiration, annotations...) are left out. Plain EDF's free-text patient
field is never read; EDF+'s structured patient code is the file's patient id.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ecg_atlas.embedder.leads import canonical_lead_name
from ecg_atlas.embedder.recording import Recording
from ecg_atlas.errors import InvalidECGError

from .common import MAX_VALUES, build_recording, check_fs, device_name, mv_factor, parse_sex, read_bounded

WHAT = "EDF"
_ECG_PREFIX = re.compile(r"^\s*(?:ECG|EKG)[\s_:-]*", re.IGNORECASE)
_OTHER_LEADS = re.compile(r"^(?:V[1-9]R?|V1[0-9]|-?AVR|[XYZ]|CM5|CC5|MLII|MLI|MLIII)$", re.IGNORECASE)


def read_edf(path: Path) -> Recording:
    import pyedflib  # imported here: only EDF input needs it

    what = f"{WHAT} file {path}"
    data = read_bounded(path, WHAT)
    # the record layout comes from the raw header (pyedflib hides EDF+ annotation channels), and a
    # file whose size does not match it is refused here, before pyedflib prints about it
    try:
        n_signals = int(data[252:256])
        n_records = int(data[236:244])
        layout_at = 256 + n_signals * 216
        per_record = [int(data[layout_at + 8 * i:layout_at + 8 * i + 8]) for i in range(n_signals)]
    except ValueError as error:
        raise InvalidECGError(f"{what}: the EDF header is damaged or cut short", reason="truncated") from error
    labels = [data[256 + 16 * i:256 + 16 * i + 16].decode("ascii", "replace").strip() for i in range(n_signals)]
    header_bytes = 256 * (n_signals + 1)
    record_len = sum(per_record)
    if n_signals < 1 or min(per_record) < 0:
        raise InvalidECGError(f"{what}: the EDF header declares {n_signals} signals with "
                              f"{min(per_record, default=0)} samples per record", reason="unreadable")
    if max(n_records, 1) * record_len > MAX_VALUES:  # before anything is allocated for them
        raise InvalidECGError(f"{what}: the header declares {n_records} data records of {record_len} samples, "
                              f"more than one ECG reader accepts ({MAX_VALUES} values)", reason="too_large")
    if n_records < 1 or record_len < 1 or len(data) < header_bytes + 2 * n_records * record_len:
        raise InvalidECGError(f"{what}: the header declares {n_records} data records of {record_len} samples; "
                              f"the file holds {len(data)} bytes", reason="truncated")
    try:
        reader = pyedflib.EdfReader(str(path))
    except OSError as error:
        raise InvalidECGError(f"{what} is not a readable EDF/EDF+ file ({error})", reason="unreadable") from error
    try:
        headers = reader.getSignalHeaders()
        header = reader.getHeader()
        is_plus = reader.filetype in (pyedflib.FILETYPE_EDFPLUS, pyedflib.FILETYPE_BDFPLUS)
        start = reader.getStartdatetime()
        patient_code = reader.getPatientCode() if is_plus else None
    finally:
        reader.close()
    records = np.frombuffer(data, "<i2", n_records * record_len, header_bytes).reshape(n_records, record_len)
    offsets = np.concatenate([[0], np.cumsum(per_record)])
    by_label = {label: i for i, label in enumerate(labels)}
    names, leads, rates = [], [], set()
    for signal_header in headers:
        name = _ecg_lead_name(signal_header["label"])
        raw_index = by_label.get(signal_header["label"].strip())
        if name is None or raw_index is None:
            continue
        rates.add(float(signal_header["sample_frequency"]))
        digital_range = signal_header["digital_max"] - signal_header["digital_min"]
        if digital_range == 0:  # EDF requires max > min: samples of an empty range cannot be scaled
            raise InvalidECGError(f"{what}: channel {signal_header['label'].strip()!r} has digital maximum = "
                                  f"minimum ({signal_header['digital_max']}), so its samples cannot be scaled "
                                  f"to physical units", reason="bad_units")
        digital = records[:, offsets[raw_index]:offsets[raw_index + 1]].reshape(-1)
        scale = (signal_header["physical_max"] - signal_header["physical_min"]) / digital_range
        mv = (digital.astype(np.float64) - signal_header["digital_min"]) * scale + signal_header["physical_min"]
        names.append(name)
        leads.append(mv * mv_factor(signal_header["dimension"] or "uV", what))
    if not leads:
        raise InvalidECGError(f"{what} has no ECG channel (labels: {', '.join(labels)})", reason="no_waveform")
    if len(rates) != 1:
        raise InvalidECGError(f"{what}: ECG channels have different sampling rates {sorted(rates)}",
                              reason="bad_sampling_rate")
    metadata = {
        "sex": parse_sex(header.get("sex") or header.get("gender")) if is_plus else None,
        "acquisition_time": start.isoformat(timespec="seconds") if start else None,
        "device": device_name(header.get("equipment")) if is_plus else None,
    }
    return build_recording(leads, names, check_fs(rates.pop(), what), declared_leads=None, what=what,
                           source=str(path), metadata=metadata, patient_id=patient_code or None)


def _ecg_lead_name(label: str) -> str | None:
    """The lead a channel label names, or None for a channel that is not an ECG lead."""
    if label.strip().upper().startswith("EDF ANNOTATIONS"):
        return None
    bare = _ECG_PREFIX.sub("", label).strip()
    canonical = canonical_lead_name(bare)
    if canonical is not None:
        return canonical
    if _OTHER_LEADS.match(bare) or bare != label.strip():  # an ECG channel with an unusual lead
        return bare or label.strip()
    return None

