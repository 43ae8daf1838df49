"""SNOMED CT diagnosis codes by name: ``164889003`` is shown as ``164889003 atrial fibrillation``.

The table (``snomed_ct.csv`` beside this module, 133 codes) is the PhysioNet / Computing in
Cardiology Challenge 2020–2021 mapping (``dx_mapping_scored.csv`` and ``dx_mapping_unscored.csv``:
code, abbreviation, name) with the label group of each code from the sample corpus's
``snomed_label_groups.csv`` (../shared/data/ecg/labels). Every code in the corpus's
``labels_snomed`` column and in its WFDB headers' ``#Dx`` lines is in it; a code that is not keeps
its number alone.

Which metadata hold codes: ``dx`` (what the WFDB readers take from ``#Dx``) and any column whose
name contains ``snomed`` (the manifest's ``labels_snomed``). The CLI (get, search, cluster) and the
web use ``display_value`` / ``snomed_name`` from here; nothing else keeps a copy of the table.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass
from importlib import resources

TABLE = "snomed_ct.csv"


@dataclass(frozen=True)
class SnomedCode:
    code: str
    abbreviation: str  # "AF"; "" where the table has none
    name: str  # "atrial fibrillation"
    label_group: str  # "AF_AFL" (the corpus's label_groups); "" where the code has none


@functools.lru_cache(maxsize=1)
def snomed_table() -> dict[str, SnomedCode]:
    """code -> SnomedCode, read once from the table shipped in the package."""
    with resources.files("ecg_atlas").joinpath(TABLE).open(newline="", encoding="utf-8") as f:
        return {row["snomed_code"]: SnomedCode(row["snomed_code"], row["abbreviation"], row["description"],
                                               row["label_group"]) for row in csv.DictReader(f)}


def _key(code: object) -> str:
    text = str(code).strip()
    return text[:-2] if text.endswith(".0") else text  # a code read as a float by a CSV reader


def snomed_name(code: object) -> str | None:
    """The name of a SNOMED CT code (``164889003`` or ``"164889003"`` -> ``"atrial fibrillation"``),
    None when the table does not have it."""
    found = snomed_table().get(_key(code))
    return found.name if found else None


def snomed_abbreviation(code: object) -> str | None:
    found = snomed_table().get(_key(code))
    return (found.abbreviation or None) if found else None


def with_name(code: object) -> str:
    """``"164889003 atrial fibrillation"``; the code alone when the table does not name it."""
    name = snomed_name(code)
    return f"{_key(code)} {name}" if name else str(code)


def holds_snomed(column: str) -> bool:
    """Whether a metadata column holds SNOMED CT codes: ``dx`` or a name containing ``snomed``."""
    lowered = column.lower()
    return lowered == "dx" or "snomed" in lowered


def display_value(column: str, value: object) -> object:
    """A metadata value as a person should read it: the codes of a SNOMED column named
    (a list stays a list, a ``;`` or ``,`` separated string is named item by item); other columns
    and values unchanged."""
    if not holds_snomed(column) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [with_name(v) for v in value]
    if isinstance(value, (int, str)):
        text = str(value)
        for sep in (";", ","):
            if sep in text:
                return f"{sep} ".join(with_name(v) for v in text.split(sep) if v.strip())
        return with_name(text)
    return value


def label_display(label: str) -> str:
    """A probe or enrichment label ``COLUMN:VALUE`` with a SNOMED value named
    (``labels_snomed:164889003`` -> ``labels_snomed:164889003 atrial fibrillation``)."""
    column, sep, value = label.partition(":")
    if sep and holds_snomed(column):
        return f"{column}:{with_name(value)}"
    return label
