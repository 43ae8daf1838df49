"""DICOM waveforms (12-lead ECG, general ECG, ambulatory, hemodynamic...) through pydicom.

``Dataset.waveform_array`` applies channel sensitivity x correction factor + baseline; this
module picks the multiplex group that is the ECG (the rhythm group, never a median beat), names
the channels from their source codes, turns the sentinel sample value -32768 into a gap (cut when
it ends the group), and converts each channel's sensitivity unit to mV. The Waveform Padding
Value attribute is not trusted for this: ECG Toolkit writes 0, a value real ECGs hold.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ecg_atlas.embedder.recording import Recording
from ecg_atlas.errors import InvalidECGError

from .common import (
    SCP_LEAD_CODES,
    UNIT_TO_MV,
    build_recording,
    check_file_size,
    check_fs,
    check_size,
    device_name,
    iso_time,
    mv_factor,
    parse_age,
    parse_date,
    parse_sex,
    parse_time,
)

WHAT = "DICOM waveform"
_MEANING = re.compile(r"^\s*(?:lead\s+)?(-?[a-z]+\d*[a-z]?)\b", re.IGNORECASE)
_NOT_RHYTHM = ("MEDIAN", "BEAT", "AVERAGE", "TEMPLATE")
#: Waveform SOP classes that carry ECG leads: 12-lead, general, ambulatory and 32-bit ECG,
#: hemodynamic (GE MAC-Lab stores its 12-lead ECG there) and cardiac electrophysiology.
ECG_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.9.1.1", "1.2.840.10008.5.1.4.1.1.9.1.2", "1.2.840.10008.5.1.4.1.1.9.1.3",
    "1.2.840.10008.5.1.4.1.1.9.1.4", "1.2.840.10008.5.1.4.1.1.9.2.1", "1.2.840.10008.5.1.4.1.1.9.3.1",
}
READ_TAGS = ["SOPClassUID", "WaveformSequence", "PatientID", "PatientAge", "PatientSex", "AcquisitionDateTime",
             "ContentDate", "ContentTime", "StudyDate", "StudyTime", "Manufacturer", "ManufacturerModelName"]
#: int16's minimum marks "no sample" (e.g. the last median-beat sample of ECG Toolkit files).
SENTINEL = -32768


def read_dicom(path: Path) -> Recording:
    import pydicom  # imported here: only DICOM input needs it
    from pydicom.errors import InvalidDicomError

    # pydicom's value-validation warnings quote element values (patient names among them) in
    # WARNING log records; ECG Atlas logs no identifiers above DEBUG, so validation is off.
    pydicom.config.settings.reading_validation_mode = pydicom.config.IGNORE
    what = f"{WHAT} file {path}"
    check_file_size(path, WHAT)
    try:  # only what is used is parsed: names, birth dates and other identifiers never are
        dataset = pydicom.dcmread(path, specific_tags=READ_TAGS)
    except InvalidDicomError as error:
        raise InvalidECGError(f"{path} is not a DICOM file ({error})", reason="unreadable") from error
    except Exception as error:  # pydicom raises many types for damaged files
        raise InvalidECGError(f"{what} could not be parsed; it may be truncated ({type(error).__name__}: {error})",
                              reason="truncated") from error
    try:  # elements are decoded on first access, so damage can surface anywhere below
        return _read_dataset(dataset, path, what)
    except InvalidECGError:
        raise
    except Exception as error:
        raise InvalidECGError(f"{what} holds a damaged element ({type(error).__name__}: {error})",
                              reason="unreadable") from error


def _read_dataset(dataset, path: Path, what: str) -> Recording:
    sop_class = str(dataset.get("SOPClassUID", "") or "")
    if sop_class and sop_class not in ECG_SOP_CLASSES:
        raise InvalidECGError(f"{what}: SOP class {sop_class} is not an ECG waveform (12-lead, general, "
                              f"ambulatory, hemodynamic or electrophysiology)", reason="no_waveform")
    groups = dataset.get("WaveformSequence")
    if not groups:
        raise InvalidECGError(f"{what} holds no waveform (no WaveformSequence): it is not an ECG object",
                              reason="no_waveform")
    index = _rhythm_group(groups, what)
    group = groups[index]
    channels = group.get("ChannelDefinitionSequence") or []
    n_channels = int(group.get("NumberOfWaveformChannels", 0))
    n_samples = int(group.get("NumberOfWaveformSamples", 0))
    fs = check_fs(float(group.get("SamplingFrequency", 0) or 0), what)
    check_size(n_channels, n_samples, what)
    if n_channels != len(channels):
        raise InvalidECGError(f"{what}: the waveform group declares {n_channels} channels but defines "
                              f"{len(channels)}", reason="lead_count_mismatch")
    bits = int(group.get("WaveformBitsAllocated", 16))
    expected = n_channels * n_samples * bits // 8
    if len(group.get("WaveformData", b"")) < expected:
        raise InvalidECGError(f"{what}: the waveform data holds {len(group.get('WaveformData', b''))} bytes, "
                              f"{expected} expected for {n_channels} channels x {n_samples} samples",
                              reason="truncated")
    values = dataset.waveform_array(index)  # (samples, channels), sensitivity x correction + baseline
    if bits == 16 and group.get("WaveformSampleInterpretation", "SS") == "SS":
        raw = np.frombuffer(group.WaveformData, "<i2", n_channels * n_samples).reshape(n_samples, n_channels)
        values = _drop_sentinels(values, raw == SENTINEL)
    names, leads = [], []
    for position, channel in enumerate(channels):
        unit = channel.get("ChannelSensitivityUnitsSequence")
        unit_code = str(unit[0].get("CodeValue", "uV")) if unit else "uV"
        if unit_code.strip().lower() not in UNIT_TO_MV:
            continue  # a pressure, flow or temperature channel beside the ECG (hemodynamic objects)
        names.append(_channel_name(channel, position))
        leads.append(values[:, position] * mv_factor(unit_code, what))
    if not leads:
        raise InvalidECGError(f"{what}: no channel of the waveform is in volts; it holds no ECG lead",
                              reason="no_waveform")
    return build_recording(leads, names, fs, declared_leads=None, what=what, source=str(path),
                           metadata=_metadata(dataset), patient_id=str(dataset.get("PatientID", "")) or None)


def _rhythm_group(groups, what: str) -> int:
    """The rhythm group: labelled RHYTHM, else the longest that is not a median/average beat."""
    labels = [str(g.get("MultiplexGroupLabel", "")).upper() for g in groups]
    for i, label in enumerate(labels):
        if "RHYTHM" in label:
            return i
    candidates = [i for i, label in enumerate(labels) if not any(word in label for word in _NOT_RHYTHM)]
    if not candidates:
        raise InvalidECGError(f"{what}: only median/average beat groups ({', '.join(labels)}); no rhythm ECG",
                              reason="no_waveform")
    return max(candidates, key=lambda i: int(groups[i].get("NumberOfWaveformSamples", 0)))


def _drop_sentinels(values: np.ndarray, sentinel: np.ndarray) -> np.ndarray:
    """Trailing all-sentinel samples are cut; other sentinel samples become NaN gaps."""
    if not sentinel.any():
        return values
    all_sentinel = sentinel.all(axis=1)
    end = len(all_sentinel)
    while end and all_sentinel[end - 1]:
        end -= 1
    values = np.array(values[:end], dtype=np.float64)
    values[sentinel[:end]] = np.nan
    return values


def _channel_name(channel, position: int) -> str:
    source = channel.get("ChannelSourceSequence")
    if source:
        code = str(source[0].get("CodeValue", ""))
        if code.startswith("5.6.3-9-") and code[8:].isdigit() and int(code[8:]) in SCP_LEAD_CODES:
            return SCP_LEAD_CODES[int(code[8:])]
        match = _MEANING.match(str(source[0].get("CodeMeaning", "")))
        if match:
            return match.group(1)
    label = str(channel.get("ChannelLabel", "")).strip()
    return label or f"channel {position + 1}"


def _metadata(dataset) -> dict:
    stamp = str(dataset.get("AcquisitionDateTime", "") or "")
    date = parse_date(stamp[:8] or str(dataset.get("ContentDate", "") or dataset.get("StudyDate", "")), "%Y%m%d")
    time_text = stamp[8:14] or str(dataset.get("ContentTime", "") or dataset.get("StudyTime", ""))[:6]
    age_text = str(dataset.get("PatientAge", "") or "")
    age = parse_age(age_text[:-1], {"Y": "years", "M": "months", "W": "weeks", "D": "days"}.get(age_text[-1:], "?")) \
        if age_text else None
    return {
        "age": age,
        "sex": parse_sex(str(dataset.get("PatientSex", "") or "")),
        "acquisition_time": iso_time(date, parse_time(time_text, "%H%M%S", "%H%M")),
        "device": device_name(str(dataset.get("Manufacturer", "") or ""),
                              str(dataset.get("ManufacturerModelName", "") or "")),
    }
