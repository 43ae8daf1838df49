"""GE MUSE XML (``<RestingECG>``): the rhythm waveform, int16 base64 per lead, in mV.

MUSE stores I, II and V1-V6 (8 leads); III, aVR, aVL and aVF are derived from I and II. The
median beat (``WaveformType`` Median, 1.2 s) is not the ECG and is never read. Demographic,
order and measurement sections are optional (BRAVEHEART exports have none).
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

import numpy as np

from ecg_atlas.embedder.recording import Recording
from ecg_atlas.errors import InvalidECGError

from .common import (
    MAX_XML_BYTES,
    build_recording,
    derive_limb_leads,
    device_name,
    iso_time,
    mv_factor,
    parse_age,
    parse_date,
    parse_sex,
    parse_time,
    read_bounded,
)
from .safexml import find, local_name, parse_xml, text

WHAT = "GE MUSE XML"


def read_muse(path: Path) -> Recording:
    what = f"{WHAT} file {path}"
    root = parse_xml(read_bounded(path, WHAT, MAX_XML_BYTES), what)
    if local_name(root) != "RestingECG":
        raise InvalidECGError(f"{path}: root element <{local_name(root)}> is not MUSE's <RestingECG>",
                              reason="unreadable")
    rhythm = next((w for w in root.iter("{*}Waveform") if text(w, "WaveformType").lower() == "rhythm"), None)
    if rhythm is None:
        raise InvalidECGError(f"{path}: MUSE file has no Rhythm waveform (a median beat is not an ECG to embed)",
                              reason="no_waveform")
    try:
        fs = float(text(rhythm, "SampleBase")) * 10.0 ** float(text(rhythm, "SampleExponent", "0") or 0)
    except ValueError as error:
        raise InvalidECGError(f"{what}: SampleBase/SampleExponent are not numbers",
                              reason="bad_sampling_rate") from error
    names, leads = [], []
    for lead in rhythm.iter("{*}LeadData"):
        names.append(text(lead, "LeadID"))
        leads.append(_lead_mv(lead, what))
    declared = text(rhythm, "NumberofLeads")
    if declared.isdigit() and int(declared) != len(leads):
        raise InvalidECGError(f"{what}: NumberofLeads says {declared} but the rhythm waveform holds "
                              f"{len(leads)} leads", reason="lead_count_mismatch")
    names, leads = derive_limb_leads(names, leads)
    demographics = find(root, "PatientDemographics")
    test = find(root, "TestDemographics")
    metadata = {
        "age": parse_age(text(demographics, "PatientAge"), text(demographics, "AgeUnits", "years") or "years"),
        "sex": parse_sex(text(demographics, "Gender")),
        "acquisition_time": iso_time(parse_date(text(test, "AcquisitionDate"), "%m-%d-%Y", "%Y-%m-%d"),
                                     parse_time(text(test, "AcquisitionTime"), "%H:%M:%S", "%H:%M")),
        "device": device_name("GE", text(test, "AcquisitionDevice")) if test is not None else None,
    }
    return build_recording(leads, names, fs, declared_leads=None, what=what, source=str(path), metadata=metadata,
                           patient_id=text(demographics, "PatientID") or None)


def _lead_mv(lead, what: str) -> np.ndarray:
    name = text(lead, "LeadID") or "?"
    encoded = find(lead, "WaveFormData")
    try:
        raw = base64.b64decode(encoded.text if encoded is not None and encoded.text else "")
    except (binascii.Error, ValueError) as error:
        raise InvalidECGError(f"{what}: lead {name}'s base64 WaveFormData is truncated or corrupt ({error})",
                              reason="truncated") from error
    sample_size = int(text(lead, "LeadSampleSize", "2") or 2)
    if sample_size != 2:
        raise InvalidECGError(f"{what}: lead {name} has {sample_size}-byte samples; MUSE stores 2", reason="unreadable")
    declared = text(lead, "LeadSampleCountTotal")
    if len(raw) % 2 or (declared.isdigit() and len(raw) != 2 * int(declared)):
        raise InvalidECGError(f"{what}: lead {name} holds {len(raw)} bytes but declares {declared or '?'} "
                              f"2-byte samples", reason="truncated")
    try:
        per_bit = float(text(lead, "LeadAmplitudeUnitsPerBit"))
    except ValueError as error:
        raise InvalidECGError(f"{what}: lead {name} has no LeadAmplitudeUnitsPerBit", reason="bad_units") from error
    factor = per_bit * mv_factor(text(lead, "LeadAmplitudeUnits", "MICROVOLTS"), what)
    return np.frombuffer(raw, dtype="<i2").astype(np.float64) * factor
