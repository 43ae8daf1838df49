"""HL7 aECG (``<AnnotatedECG>``, FDA annotated ECG): the RHYTHM series in mV.

A series holds a sequence set: one time sequence (``head`` + ``increment``: the sample interval)
and one sequence per lead (``MDC_ECG_LEAD_*`` code; ``origin`` + ``scale`` x ``digits``, each with
its unit). Representative beats and annotations are not read.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from lxml.etree import _Element as Element

from ecg_atlas.embedder.recording import Recording
from ecg_atlas.errors import InvalidECGError

from .common import (
    MAX_XML_BYTES,
    age_at,
    build_recording,
    device_name,
    iso_time,
    mv_factor,
    parse_date,
    parse_sex,
    parse_time,
    read_bounded,
)
from .safexml import find, iterfind, local_name, parse_xml, text

WHAT = "HL7 aECG"
#: MDC lead codes whose suffix is not already the usual name.
_LEAD_CODES = {"AVR": "aVR", "AVL": "aVL", "AVF": "aVF"}
_SECONDS = {"s": 1.0, "ms": 1e-3, "us": 1e-6}


def read_hl7_aecg(path: Path) -> Recording:
    what = f"{WHAT} file {path}"
    root = parse_xml(read_bounded(path, WHAT, MAX_XML_BYTES), what)
    if local_name(root) != "AnnotatedECG":
        raise InvalidECGError(f"{path}: root element <{local_name(root)}> is not HL7 aECG's <AnnotatedECG>",
                              reason="unreadable")
    series = next((s for s in root.iter("{*}series") if _code(s) == "RHYTHM"), None)
    if series is None:
        raise InvalidECGError(f"{what}: no RHYTHM series (representative beats alone are not an ECG to embed)",
                              reason="no_waveform")
    sequence_set = find(series, "component/sequenceSet")
    if sequence_set is None:
        raise InvalidECGError(f"{what}: the RHYTHM series has no sequenceSet", reason="no_waveform")
    interval_s, names, leads = None, [], []
    for sequence in iterfind(sequence_set, "component/sequence"):
        code, value = _code(sequence), find(sequence, "value")
        if value is None:
            continue
        if code in ("TIME_ABSOLUTE", "TIME_RELATIVE"):
            interval_s = _quantity(find(value, "increment"), _SECONDS, what, "sample increment")
        elif code.startswith("MDC_ECG_LEAD_"):
            suffix = code[len("MDC_ECG_LEAD_"):]
            names.append(_LEAD_CODES.get(suffix, suffix))
            leads.append(_lead_mv(value, what, names[-1]))
    if interval_s is None or interval_s <= 0:
        raise InvalidECGError(f"{what}: the RHYTHM series gives no positive sample increment",
                              reason="bad_sampling_rate")
    metadata, patient_id = _demographics(root, series)
    return build_recording(leads, names, 1.0 / interval_s, declared_leads=None, what=what, source=str(path),
                           metadata=metadata, patient_id=patient_id)


def _code(element: Element) -> str:
    code = find(element, "code")
    return "" if code is None else code.get("code", "").strip().upper()


def _quantity(element: Element | None, units: dict[str, float], what: str, name: str) -> float:
    if element is None:
        raise InvalidECGError(f"{what}: no {name}", reason="unreadable")
    unit = element.get("unit", "").strip()
    try:
        number = float(element.get("value", ""))
    except ValueError as error:
        raise InvalidECGError(f"{what}: {name} is not a number", reason="unreadable") from error
    if unit not in units:
        raise InvalidECGError(f"{what}: {name} has unit {unit!r}, expected one of {sorted(units)}", reason="bad_units")
    return number * units[unit]


def _lead_mv(value: Element, what: str, name: str) -> np.ndarray:
    origin, scale = find(value, "origin"), find(value, "scale")
    digits = text(value, "digits")
    if scale is None:
        raise InvalidECGError(f"{what}: lead {name} has no scale", reason="bad_units")
    scale_mv = float(scale.get("value", "nan")) * mv_factor(scale.get("unit", "uV"), what)
    origin_mv = 0.0 if origin is None else float(origin.get("value", "0")) * mv_factor(origin.get("unit", "uV"), what)
    try:
        with warnings.catch_warnings():  # older NumPy only warns when it stops at a malformed number
            warnings.simplefilter("error", DeprecationWarning)
            samples = np.fromstring(digits, dtype=np.int64, sep=" ")
    except (ValueError, DeprecationWarning) as error:
        raise InvalidECGError(f"{what}: lead {name}'s digits are not whitespace-separated integers ({error})",
                              reason="unreadable") from error
    return origin_mv + samples * scale_mv


def _demographics(root: Element, series: Element) -> tuple[dict, str | None]:
    person = find(root, ".//subjectDemographicPerson")
    subject = find(root, ".//trialSubject")
    low = find(series, "effectiveTime/low")
    stamp = (low.get("value", "") if low is not None else "").split(".")[0]
    acquired = parse_date(stamp[:8], "%Y%m%d")
    birth = find(person, "birthTime")
    birth_date = parse_date((birth.get("value", "") if birth is not None else "")[:8], "%Y%m%d")
    sex = find(person, "administrativeGenderCode")
    device = find(series, ".//manufacturedSeriesDevice")
    organisation = find(series, ".//manufacturerOrganization")
    subject_id = find(subject, "id")
    metadata = {
        "age": age_at(birth_date, acquired),
        "sex": parse_sex(sex.get("code") if sex is not None else None),
        "acquisition_time": iso_time(acquired, parse_time(stamp[8:14], "%H%M%S")),
        "device": device_name(text(organisation, "name"), text(device, "manufacturerModelName")),
    }
    patient_id = None
    if subject_id is not None:
        patient_id = subject_id.get("extension") or None
    return metadata, patient_id
