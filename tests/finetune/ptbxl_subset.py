"""A small real PTB-XL subset as a user would hand it to `ecg-atlas finetune`: a folder of WFDB
records (links to ../shared/data/ptbxl, laid out as there: foldNN/ptbxl_XXXXX) and a manifest CSV
with PTB-XL's own columns, plus ``main_class`` (MI, NORM or OTHER: a multi-class column)."""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path

from tests.conftest import shared_data_dir

#: (folds, records, MI-positive records among them) per split
DEFAULT_PARTS = {"train": ((1, 2), 40, 14), "val": ((9,), 20, 7)}


@cache
def manifest_rows() -> tuple[dict, ...]:
    with open(shared_data_dir() / "ptbxl" / "manifest.csv", newline="") as f:
        return tuple(csv.DictReader(f))


def pick(parts: dict = DEFAULT_PARTS) -> dict[str, list[dict]]:
    """Records per split: the first MI-positive and MI-negative records of its folds, in manifest order."""
    out = {}
    for part, (folds, n, n_mi) in parts.items():
        rows = [r for r in manifest_rows() if int(r["strat_fold"]) in folds]
        mi = [r for r in rows if r["MI"] == "1"][:n_mi]
        other = [r for r in rows if r["MI"] == "0"][: n - n_mi]
        out[part] = mi + other
    return out


def main_class(row: dict) -> str:
    return "MI" if row["MI"] == "1" else "NORM" if row["NORM"] == "1" else "OTHER"


def write_subset(root: Path, parts: dict = DEFAULT_PARTS, *, extra_files: int = 0, broken: int = 0,
                 edit=None) -> tuple[Path, Path, dict[str, list[dict]]]:
    """(data folder, manifest, rows per split) under `root`. `extra_files`: records linked in the
    folder but absent from the manifest; `broken`: damaged WFDB headers with a training row of the
    manifest each; `edit(row) -> row`: a change to the manifest rows."""
    chosen = pick(parts)
    data = root / "ptbxl"
    rows = [dict(r) for part in chosen.values() for r in part]
    listed = {r["record"] for r in rows}
    spare = [r for r in manifest_rows() if int(r["strat_fold"]) == 3 and r["record"] not in listed][:extra_files]
    for row in rows + spare:
        for suffix in (".hea", ".dat"):
            link = data / (row["record"] + suffix)
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.exists():
                link.symlink_to(shared_data_dir() / "ptbxl" / (row["record"] + suffix))
    for i in range(broken):
        record = f"fold01/broken_{i}"
        (data / "fold01").mkdir(parents=True, exist_ok=True)
        (data / f"{record}.hea").write_text("this is not a WFDB header\n")
        rows.append({**rows[0], "record": record, "ecg_id": str(900_000 + i), "patient_id": ""})
    manifest = root / "manifest.csv"
    fields = list(manifest_rows()[0]) + ["main_class"]
    with open(manifest, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            row = {**row, "main_class": main_class(row)}
            writer.writerow(edit(row) if edit else row)
    return data, manifest, chosen
