"""Which hospital export a file is, from its first bytes (the extension is only a fallback).

DICOM: ``DICM`` after the 128-byte preamble. EDF/EDF+: version field ``0`` and seven spaces.
SCP-ECG: ``SCPECG`` in section 0's header. XML exports by their root element: ``RestingECG``
(GE MUSE), ``restingecgdata`` (Philips Sierra), ``AnnotatedECG`` (HL7 aECG), in UTF-8, Latin-1
or UTF-16 (byte-order mark).
"""

from __future__ import annotations

import re
from pathlib import Path

HEAD_BYTES = 8192
#: Extensions that name a format even when its content marks are missing (the reader then says
#: what is wrong, e.g. a non-conformant SCP file), and that ``find_ecgs`` always picks up.
EXTENSIONS = {".scp": "scp", ".edf": "edf", ".dcm": "dicom"}
XML_ROOTS = {"RestingECG": "muse", "restingecgdata": "sierra", "AnnotatedECG": "hl7_aecg"}

_SKIPPED = re.compile(r"<\?.*?\?>|<!--.*?-->|<!DOCTYPE[^\[>]*(?:\[.*?\])?\s*>|\s+", re.DOTALL)
_ROOT = re.compile(r"<(?:[A-Za-z_][\w.-]*:)?([A-Za-z_][\w.-]*)")


def sniff_bytes(head: bytes) -> str | None:
    """The export format of a file starting with ``head`` (at least 256 bytes when available)."""
    if head[128:132] == b"DICM":
        return "dicom"
    if head[:8] == b"0       " and head[184:192].strip().isdigit():
        return "edf"
    if len(head) >= 22 and head[16:22] == b"SCPECG":
        return "scp"
    return _xml_root(head)


def sniff_format(path: Path) -> str | None:
    try:
        with open(path, "rb") as file:
            head = file.read(HEAD_BYTES)
    except OSError:
        return None
    return sniff_bytes(head)


def _xml_root(head: bytes) -> str | None:
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        text = head[: len(head) // 2 * 2].decode("utf-16", "ignore")
    elif head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"<":
        text = head.decode("latin-1")
    else:
        return None
    position = 0
    text = text.lstrip("\ufeff")
    while True:  # skip the declaration, comments, DOCTYPE and whitespace before the root element
        skipped = _SKIPPED.match(text, position)
        if not skipped or skipped.end() == position:
            break
        position = skipped.end()
    root = _ROOT.match(text, position)
    return XML_ROOTS.get(root.group(1)) if root else None
