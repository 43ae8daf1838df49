"""Conversions between the wire messages (ecg_atlas.v1) and NumPy / Python values.

Shared by the server and the client so that both sides read and write ECGs, vectors, metadata
values and filters the same way.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping, Sequence

import numpy as np

from ecg_atlas.embedder.readers import recording_from_array
from ecg_atlas.embedder.recording import Recording, physical_from_digital
from ecg_atlas.errors import FilterError, InvalidECGError
from ecg_atlas.index.filters import All, Any, Filter, Term
from ecg_atlas.index.signal_copy import FLOAT32, INT16, StoredSignal
from ecg_atlas.v1 import atlas_pb2 as pb

_ITEMSIZE = {pb.SAMPLE_FORMAT_FLOAT32_LE: 4, pb.SAMPLE_FORMAT_INT16_LE: 2}


# ---- ECGs ---------------------------------------------------------------------------------------

def ecg_to_proto(signal, fs: float, lead_names: Sequence[str], *, gain: float | None = None,
                 baseline: int = 0) -> pb.ECG:
    """(leads, samples) array → ECG message. An int16 array with ``gain`` travels as INT16_LE
    (half the bytes); anything else as FLOAT32_LE."""
    signal = np.asarray(signal)
    if signal.ndim != 2:
        raise InvalidECGError(f"ECG signal must be 2-D (leads, samples), got shape {signal.shape}",
                              reason="bad_signal")
    if gain is not None and signal.dtype == np.int16:
        fmt, data = pb.SAMPLE_FORMAT_INT16_LE, np.ascontiguousarray(signal, dtype="<i2").tobytes()
    else:
        fmt, data = pb.SAMPLE_FORMAT_FLOAT32_LE, np.ascontiguousarray(signal, dtype="<f4").tobytes()
        gain, baseline = None, 0
    return pb.ECG(lead_names=[str(n) for n in lead_names], sampling_rate_hz=float(fs),
                  n_leads=signal.shape[0], n_samples=signal.shape[1], sample_format=fmt, samples=data,
                  gain=gain or 0.0, baseline=baseline)


def ecg_from_proto(ecg: pb.ECG, *, max_duration_s: float | None = None) -> Recording:
    """Validate and unpack an ECG message; every problem is an InvalidECGError saying what to fix."""
    if ecg.sample_format not in _ITEMSIZE:
        message = (
            "sample_format must be SAMPLE_FORMAT_FLOAT32_LE or SAMPLE_FORMAT_INT16_LE, "
            f"got {pb.SampleFormat.Name(ecg.sample_format)}"
            if ecg.sample_format in pb.SampleFormat.values() else
            f"sample_format {ecg.sample_format} is unknown; use SAMPLE_FORMAT_FLOAT32_LE or SAMPLE_FORMAT_INT16_LE")
        raise InvalidECGError(message, reason="bad_signal")
    n_leads, n_samples = ecg.n_leads, ecg.n_samples
    if n_leads == 0 or n_samples == 0:
        raise InvalidECGError(f"ECG shape must be stated: n_leads={n_leads}, n_samples={n_samples}",
                              reason="bad_signal")
    if len(ecg.lead_names) != n_leads:
        raise InvalidECGError(f"n_leads is {n_leads} but {len(ecg.lead_names)} lead names were sent",
                              reason="bad_signal")
    fs = ecg.sampling_rate_hz
    if not math.isfinite(fs) or fs <= 0:
        raise InvalidECGError(f"sampling_rate_hz must be a positive number, got {fs}", reason="bad_signal")
    if max_duration_s is not None and n_samples / fs > max_duration_s:
        raise InvalidECGError(
            f"ECG is too long: {n_samples / fs:.1f} s; the limit is {max_duration_s:g} s. Split it into "
            f"shorter pieces", reason="too_long",
            details={"duration_s": round(n_samples / fs, 3), "maximum_s": max_duration_s})
    itemsize = _ITEMSIZE[ecg.sample_format]
    expected = n_leads * n_samples * itemsize
    if len(ecg.samples) != expected:
        raise InvalidECGError(
            f"samples hold {len(ecg.samples)} bytes; {n_leads} leads x {n_samples} samples of "
            f"{pb.SampleFormat.Name(ecg.sample_format)} need {expected}. Check the sample format "
            f"(dtype) and the stated shape", reason="bad_signal")
    if ecg.sample_format == pb.SAMPLE_FORMAT_FLOAT32_LE:
        signal = np.frombuffer(ecg.samples, dtype="<f4").reshape(n_leads, n_samples)
    else:
        if not (math.isfinite(ecg.gain) and ecg.gain > 0):
            raise InvalidECGError(f"INT16_LE samples need a positive gain (units per mV), got {ecg.gain}",
                                  reason="bad_signal")
        raw = np.frombuffer(ecg.samples, dtype="<i2").reshape(n_leads, n_samples)
        signal = physical_from_digital(raw, ecg.gain, ecg.baseline)  # the bits wfdb's float64 path gives
    return recording_from_array(signal, fs, list(ecg.lead_names))


def stored_signal_from_proto(ecg: pb.ECG) -> StoredSignal:
    """The samples of a validated ECG message exactly as sent, for the store to keep."""
    if ecg.sample_format == pb.SAMPLE_FORMAT_INT16_LE:
        return StoredSignal(ecg.sampling_rate_hz, tuple(ecg.lead_names), INT16, ecg.n_samples, ecg.samples,
                            ecg.gain, ecg.baseline)
    return StoredSignal(ecg.sampling_rate_hz, tuple(ecg.lead_names), FLOAT32, ecg.n_samples, ecg.samples)


# ---- vectors ------------------------------------------------------------------------------------

def vector_to_proto(vector: np.ndarray) -> pb.Vector:
    return pb.Vector(values=np.asarray(vector, dtype=np.float32).ravel().tolist())


def vector_from_proto(vector: pb.Vector) -> np.ndarray:
    return np.asarray(vector.values, dtype=np.float32)


def matrix_to_proto(matrix: np.ndarray) -> pb.Matrix:
    matrix = np.asarray(matrix, dtype="<f4")
    return pb.Matrix(rows=matrix.shape[0], cols=matrix.shape[1], data=np.ascontiguousarray(matrix).tobytes())


def matrix_from_proto(matrix: pb.Matrix) -> np.ndarray:
    return np.frombuffer(matrix.data, dtype="<f4").reshape(matrix.rows, matrix.cols).astype(np.float32)


# ---- analysis -----------------------------------------------------------------------------------

def estimate_to_proto(interval) -> pb.Estimate:
    """An ``analysis.metrics.Interval`` (value, low, high, resamples_used); NaN stays NaN."""
    return pb.Estimate(value=float(interval.value), ci_low=float(interval.low), ci_high=float(interval.high),
                       resamples_used=int(interval.resamples_used))


def estimate_from_proto(estimate: pb.Estimate) -> dict:
    return {"value": estimate.value, "ci_low": estimate.ci_low, "ci_high": estimate.ci_high,
            "resamples_used": estimate.resamples_used}


# ---- metadata values ----------------------------------------------------------------------------

def value_to_proto(value: object) -> pb.Value:
    if isinstance(value, np.generic):
        value = value.item()
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return pb.Value(null_value=True)
    if isinstance(value, bool):
        return pb.Value(flag=value)
    if isinstance(value, int):
        return pb.Value(integer=value)
    if isinstance(value, float):
        return pb.Value(number=value)
    if isinstance(value, str):
        return pb.Value(text=value)
    if isinstance(value, dt.datetime):
        out = pb.Value()
        out.time.FromDatetime(value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc))
        return out
    if isinstance(value, (list, tuple, np.ndarray)) and all(isinstance(v, str) for v in value):
        return pb.Value(labels=pb.Labels(values=list(value)))
    raise TypeError(f"metadata value of type {type(value).__name__} cannot be sent; use a number, string, "
                    f"boolean, datetime or a list of strings")


def value_from_proto(value: pb.Value) -> object:
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return None
    if kind == "labels":
        return list(value.labels.values)
    if kind == "time":
        return value.time.ToDatetime(tzinfo=dt.timezone.utc)
    return getattr(value, kind)


def metadata_to_proto(target, metadata: Mapping[str, object]) -> None:
    """Fill a ``map<string, Value>`` field from a dict."""
    for key, value in metadata.items():
        target[key].CopyFrom(value_to_proto(value))


def metadata_from_proto(source) -> dict[str, object]:
    return {key: value_from_proto(value) for key, value in source.items()}


# ---- filters ------------------------------------------------------------------------------------

def filter_to_proto(tree: Filter) -> pb.Filter:
    if isinstance(tree, Term):
        term = pb.Term(column=tree.column, op=tree.op)
        if isinstance(tree.value, (list, tuple, set, frozenset)):
            term.values.extend(value_to_proto(v) for v in tree.value)
        elif tree.value is not None:
            term.value.CopyFrom(value_to_proto(tree.value))
        return pb.Filter(term=term)
    parts = pb.FilterList(parts=[filter_to_proto(p) for p in tree.parts])
    return pb.Filter(all=parts) if isinstance(tree, All) else pb.Filter(any=parts)


def filter_from_proto(message: pb.Filter, depth: int = 0) -> Filter | None:
    """The filter tree of a message (None when no filter was sent)."""
    if depth > 32:
        raise FilterError("filter is nested more than 32 levels deep; flatten it (and/or groups take many parts)")
    node = message.WhichOneof("node")
    if node is None:
        return None
    if node == "term":
        term = message.term
        op = term.op.strip().lower()
        if op in ("in", "not in"):
            return Term(term.column, op, [value_from_proto(v) for v in term.values])
        return Term(term.column, op, value_from_proto(term.value) if term.HasField("value") else None)
    parts = [p for p in (filter_from_proto(x, depth + 1) for x in getattr(message, node).parts) if p is not None]
    return All(parts) if node == "all" else Any(parts)
