"""Hospital ECG exports: GE MUSE XML, DICOM waveform, Philips Sierra XML, HL7 aECG, SCP-ECG, EDF.

``sniff_format`` tells the format from a file's content; ``read_export`` reads it into the same
``Recording`` as every other reader (float32 mV, lead names, sampling rate, age / sex /
acquisition time / device metadata; the file's patient id only in ``patient_id_in_file``).
"""

from __future__ import annotations

from pathlib import Path

from ecg_atlas.embedder.recording import Recording

from .common import decoder_errors
from .sniff import EXTENSIONS, sniff_bytes, sniff_format

#: format kind -> (module, reader function, what people call it)
FORMATS = {
    "muse": ("muse", "read_muse", "GE MUSE XML"),
    "dicom": ("dicom", "read_dicom", "DICOM waveform"),
    "sierra": ("sierra", "read_sierra", "Philips Sierra XML"),
    "hl7_aecg": ("hl7_aecg", "read_hl7_aecg", "HL7 aECG"),
    "scp": ("scp", "read_scp", "SCP-ECG"),
    "edf": ("edf", "read_edf", "EDF/EDF+"),
}


def read_export(kind: str, path: Path) -> Recording:
    """Read ``path`` as export format ``kind`` (one of ``FORMATS``).

    Whatever a damaged or hostile file makes a decoder trip over ends as ``InvalidECGError``
    (``unreadable`` unless the reader named a more precise reason), never as another exception.
    """
    from importlib import import_module

    module, function, label = FORMATS[kind]
    reader = getattr(import_module(f"{__name__}.{module}"), function)
    with decoder_errors(f"{label} file", path):
        return reader(path)


__all__ = ["EXTENSIONS", "FORMATS", "read_export", "sniff_bytes", "sniff_format"]
