"""Philips Sierra / PhilipsECG XML 1.03 and 1.04 (``<restingecgdata>``) in mV.

``parsedwaveforms`` is base64 of XLI-compressed leads (``xli.py``) or raw int16. The stored III,
aVR, aVL and aVF are residuals of Philips' lead reconstruction and are rebuilt from I and II.
Resting ECGs are 10 s; the 11th second carries a 1 mV calibration pulse and is dropped. UTF-16
files (PageWriter Touch) are decoded by the XML parser from their byte-order mark.
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import numpy as np
from lxml.etree import _Element as Element

from ecg_atlas.embedder.recording import Recording
from ecg_atlas.errors import InvalidECGError

from .common import (
    MAX_XML_BYTES,
    age_at,
    build_recording,
    check_fs,
    check_size,
    device_name,
    iso_time,
    parse_age,
    parse_date,
    parse_sex,
    parse_time,
    read_bounded,
)
from .safexml import find, local_name, parse_xml, text
from .xli import xli_decode

WHAT = "Philips Sierra XML"
VERSIONS = ("1.03", "1.04", "1.04.01", "1.04.02")
STANDARD_ORDER = ("I", "II", "III", "aVR", "aVL", "aVF", "V1", "V2", "V3", "V4", "V5", "V6")
#: A Philips resting ECG is 10 s; anything after it is the calibration trailer.
ECG_SECONDS = 10


def read_sierra(path: Path) -> Recording:
    what = f"{WHAT} file {path}"
    root = parse_xml(read_bounded(path, WHAT, MAX_XML_BYTES), what)
    if local_name(root) != "restingecgdata":
        raise InvalidECGError(f"{path}: root element <{local_name(root)}> is not Philips' restingecgdata",
                              reason="unreadable")
    version = text(root, "documentinfo/documentversion")
    if version not in VERSIONS:
        raise InvalidECGError(f"{what}: document version {version or '(none)'} is not one this reader knows "
                              f"({', '.join(VERSIONS)})", reason="unsupported")
    waveforms = find(root, ".//parsedwaveforms")
    if waveforms is None or not (waveforms.text or "").strip():
        raise InvalidECGError(f"{what}: no parsedwaveforms (rhythm data)", reason="no_waveform")
    signal = find(root, "dataacquisition/signalcharacteristics")
    try:
        fs = float(text(signal, "samplingrate") or waveforms.get("samplespersecond", ""))
        resolution_uv = float(waveforms.get("resolution") or text(signal, "resolution")
                              or text(signal, "signalresolution"))
    except ValueError as error:
        raise InvalidECGError(f"{what}: sampling rate or resolution missing or not a number",
                              reason="bad_units") from error
    fs = check_fs(fs, what)
    names = _lead_names(waveforms, signal)
    try:
        data = base64.b64decode(waveforms.text)
    except (binascii.Error, ValueError) as error:
        raise InvalidECGError(f"{what}: parsedwaveforms base64 is truncated or corrupt ({error})",
                              reason="truncated") from error
    method = waveforms.get("compression") or waveforms.get("compressmethod") or "Uncompressed"
    try:
        n_samples = int(fs * float(waveforms.get("durationperchannel", "")) / 1000)
    except ValueError as error:
        raise InvalidECGError(f"{what}: durationperchannel is missing or not a number", reason="unreadable") from error
    check_size(len(names), n_samples, what)
    if method == "XLI":
        leads = xli_decode(data, len(names), n_samples, what)
    elif method.lower() in ("uncompressed", "none"):
        leads = _uncompressed(data, len(names), what)
    else:
        raise InvalidECGError(f"{what}: waveform compression {method!r} is not supported (XLI or none)",
                              reason="unsupported")
    lengths = {lead.size for lead in leads}
    if len(lengths) != 1:
        raise InvalidECGError(f"{what}: leads decode to different lengths {sorted(lengths)}", reason="truncated")
    stored = np.stack(leads).astype(np.int32)
    if tuple(names[:6]) == STANDARD_ORDER[:6]:
        _reconstruct_limb_leads(stored)
    mv = stored[:, :int(round(ECG_SECONDS * fs))] * (resolution_uv / 1000.0)
    return build_recording(list(mv), names, fs, declared_leads=None, what=what, source=str(path),
                           metadata=_metadata(root),
                           patient_id=text(root, "patient/generalpatientdata/patientid") or None)


def _lead_names(waveforms: Element, signal: Element | None) -> list[str]:
    labels = waveforms.get("leadlabels", "").split()
    if labels:
        count = waveforms.get("numberofleads", "")
        return labels[:int(count)] if count.isdigit() else labels
    count = text(signal, "numberchannelsallocated")
    n = int(count) if count.isdigit() else 12
    if text(signal, "acquisitiontype") in ("STD-12", "10-WIRE") and n <= 12:
        return list(STANDARD_ORDER[:n])
    return [f"Channel {i + 1}" for i in range(n)]


def _uncompressed(data: bytes, n_leads: int, what: str) -> list[np.ndarray]:
    if len(data) % (2 * n_leads):
        raise InvalidECGError(f"{what}: {len(data)} bytes of samples do not split into {n_leads} int16 leads",
                              reason="lead_count_mismatch")
    return list(np.frombuffer(data, "<i2").reshape(n_leads, -1))


def _reconstruct_limb_leads(stored: np.ndarray) -> None:
    """Philips stores III, aVR, aVL, aVF as residuals of their values computed from I and II."""
    lead_i, lead_ii = stored[0], stored[1]
    stored[2] = lead_ii - lead_i - stored[2]
    lead_iii = stored[2]
    stored[3] = -stored[3] - np.floor_divide(lead_i + lead_ii, 2)
    stored[4] = np.floor_divide(lead_i - lead_iii, 2) - stored[4]
    stored[5] = np.floor_divide(lead_ii + lead_iii, 2) - stored[5]


def _metadata(root: Element) -> dict:
    acquisition = find(root, "dataacquisition")
    patient = find(root, "patient/generalpatientdata")
    date = parse_date(acquisition.get("date") if acquisition is not None else None, "%Y-%m-%d")
    age = parse_age(text(patient, "age/years"))
    if age is None:
        age = age_at(parse_date(text(patient, "age/dateofbirth"), "%Y-%m-%d"), date)
    machine = find(acquisition, "machine")
    device = None
    if machine is not None:
        maker, _, model = machine.get("detaildescription", "").partition(":")
        label = (machine.text or "").strip()
        if label == "Other Manufacturer Device":
            device = device_name(maker, model.split(":")[0])
        else:
            device = device_name(maker.split()[0] if maker else "Philips", label)
    return {
        "age": age,
        "sex": parse_sex(text(patient, "sex")),
        "acquisition_time": iso_time(date, parse_time(acquisition.get("time") if acquisition is not None else None,
                                                      "%H:%M:%S")),
        "device": device,
    }
