"""ECG in, vectors out: readers, preprocessing, the ECG-FM network, checkpoint loading, inference.

Public entry points::

    from ecg_atlas.embedder import load_encoder, read_ecg, preprocess
    enc = load_encoder("mimic_iv_ecg_physionet_pretrained.pt", device="auto")
    segments = preprocess(read_ecg("record.hea"))      # (n, 12, 2500) float32
    vectors = enc.embed(segments)                       # (n, 768)

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
    "Encoder": "encoder",
    "load_encoder": "encoder",
    "random_encoder": "encoder",
    "EmbeddingEngine": "engine",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value
    return value
