"""ECG in, vectors out: readers, preprocessing, the encoders (ECG-FM, HuBERT-ECG, ECGFounder), inference.

Public entry points::

    from ecg_atlas.embedder import load_encoder, read_ecg, preprocess
    enc = load_encoder("mimic_iv_ecg_physionet_pretrained.pt", device="auto")  # or a HuBERT-ECG folder,
    segments = enc.preprocess(read_ecg("record.hea"))  # an ECGFounder .pth, bundled, random:PRESET
    vectors = enc.embed(segments)                       # (n, enc.dim); enc.contract says what went in
    preprocess(rec)                                     # ECG-FM's pipeline: (n, 12, 2500) float32

Names are resolved lazily so that reading ECGs does not import torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Recording": "recording",
    "STANDARD_LEADS": "recording",
    "PREPROCESSING_VERSION": "recording",
    "read_ecg": "readers",
    "recording_from_array": "readers",
    "preprocess": "preprocessing",
    "prepare": "preprocessing",
    "Encoder": "encoders.ecgfm",
    "BaseEncoder": "encoders.base",
    "EncoderContract": "contract",
    "load_encoder": "resolver",
    "random_encoder": "resolver",
    "EmbeddingEngine": "engine",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
