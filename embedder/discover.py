"""Finding ECG files under the paths a user names (directories are walked recursively)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .formats import EXTENSIONS as EXPORT_EXTENSIONS
from .formats import sniff_format
from .readers import _open_tracings, read_ecg
from .recording import Recording

WFDB_HEADER = ".hea"
HDF5 = {".h5", ".hdf5", ".hdf"}
NUMPY = {".npy", ".npz"}
#: Files whose content is checked for a hospital export (DICOM files often have no extension).
SNIFFED = {".xml", ".ecg", ".dicom", ""}


@dataclass(frozen=True)
class ECGSource:
    """One ECG to read: a file (and, for HDF5, a row) plus the id it gets by default."""

    path: Path
    ecg_id: str
    row: int | None = None


def default_ecg_id(path: Path, root: Path) -> str:
    """Relative path without extension, '/'-separated: ``cinc_cpsc2018/A0001``."""
    try:
        rel = path.relative_to(root)
    except ValueError:
        rel = Path(path.name)
    return rel.with_suffix("").as_posix()


def find_ecgs(paths: Iterable[str | Path], *, expand_hdf5: bool = True) -> Iterator[ECGSource]:
    """Every readable ECG under ``paths``, in sorted order, each once (WFDB records by header).

    Hospital exports are found by content (XML root element, DICOM/EDF/SCP magic); ``.scp``,
    ``.edf`` and ``.dcm`` files are always listed, so a damaged one is reported, not skipped.
    """
    seen: set[Path] = set()
    for given in paths:
        given = Path(given)
        if given.is_dir():
            root = given
            candidates = sorted(p for p in given.rglob("*") if p.is_file())
        else:
            root = given.parent
            candidates = [given]
        for path in candidates:
            suffix = path.suffix.lower()
            if given.is_dir() and suffix not in HDF5 | NUMPY | {WFDB_HEADER} and not _is_export(path, suffix):
                continue  # signal files, annotations, CSVs beside the records
            if suffix in {".dat", ".mat"} and path.with_suffix(WFDB_HEADER).exists():
                path, suffix = path.with_suffix(WFDB_HEADER), WFDB_HEADER
            if path in seen:
                continue
            seen.add(path)
            ecg_id = default_ecg_id(path, root) if given.is_dir() else path.with_suffix("").name
            names = _hdf5_row_names(path) if suffix in HDF5 and expand_hdf5 else None
            if names is None:
                yield ECGSource(path, ecg_id)
            else:
                for row, name in enumerate(names):
                    yield ECGSource(path, f"{ecg_id}/{name}", row)


def _is_export(path: Path, suffix: str) -> bool:
    if suffix in EXPORT_EXTENSIONS:
        return True
    return suffix in SNIFFED and sniff_format(path) is not None


def _hdf5_row_names(path: Path) -> list[str] | None:
    """Exam ids (or row numbers) of a CODE-15-style file, without reading any signal; None for a
    file that cannot be listed: it is then one source, and reading it says why (one bad file is
    one refusal, never the end of a run)."""
    try:
        with _open_tracings(path) as (tracings, exam_ids):
            if exam_ids is None:
                return [str(i) for i in range(tracings.shape[0])]
            return [str(v) for v in exam_ids[()].tolist()]
    except Exception:  # the read of this source reports it
        return None


def read_source(source: ECGSource, **kwargs) -> Recording:
    return read_ecg(source.path, record_index=source.row, **kwargs)
