"""Lead names: the one place that knows which spellings mean which of ECG-FM's 12 leads.

Sources disagree on case (``aVR`` / ``AVR`` / ``avr``), add words (``LEAD I``) or use the
Brazilian/European ``DI, DII, DIII`` for the limb leads. Everything is matched without regard to
case, spaces and underscores. Names that mean something else are deliberately *not*
aliased: ``MLII`` (modified Holter lead II, a different electrode placement), a bare ``V`` (some
unspecified precordial lead), ``-aVR`` (Cabrera's inverted aVR), Frank ``VX/VY/VZ`` and numbered
channels (``ECG 1``) stay unknown; the caller can rename them explicitly if they know better.
"""

from __future__ import annotations

import re

from ecg_atlas.embedder.recording import STANDARD_LEADS

#: Alternative spellings, keyed by their normalised form (see ``_normalise``). The standard names
#: themselves are added below, so only real aliases are listed here.
_ALIASES: dict[str, str] = {
    "DI": "I",
    "DII": "II",
    "DIII": "III",
}

_CANONICAL: dict[str, str] = {
    **{name.upper(): name for name in STANDARD_LEADS},
    **_ALIASES,
}

_SEPARATORS = re.compile(r"[\s_]+")
_LEAD_PREFIX = re.compile(r"^LEAD(?=.)")


def _normalise(name: str) -> str:
    compact = _SEPARATORS.sub("", name.strip().upper())
    return _LEAD_PREFIX.sub("", compact)


def canonical_lead_name(name: str) -> str | None:
    """ECG-FM's name for ``name`` (one of ``STANDARD_LEADS``), or None if it is not one of them.

    >>> canonical_lead_name(" avr "), canonical_lead_name("LEAD II"), canonical_lead_name("DIII")
    ('aVR', 'II', 'III')
    >>> canonical_lead_name("MLII") is None
    True
    """
    return _CANONICAL.get(_normalise(name))
