"""The encoders: ``base`` (what every encoder offers, the shared inference code, ``EncoderKind``)
and one module per family (``ecgfm``, ``hubert_ecg``, ``ecgfounder``), each importing only ``base``
from this package. ``embedder/resolver.py`` turns a spec or a file into one of them.

This file imports nothing, so importing one encoder never loads the others.
"""
