"""Manifests and metadata CSVs: one reader and one typing rule for every path into a store.

`ecg-atlas ingest --metadata CSV` and `ecg-atlas embed --engine ray --manifest CSV|PARQUET` both
read their file here, so the same file gives the same types and values either way:

* a CSV is read as text (the parser infers nothing), then each column gets one type for the
  whole file (`text_column_parser`): integer, number, true/false in the store's boolean words, or
  text; a column whose values look like code lists (``AF;RBBB``) becomes a label list. Empty
  cells are left unset.
* ids, paths and patient ids are never typed: ``00123`` stays ``"00123"``.
* a Parquet manifest carries its own types, which are kept.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ecg_atlas.errors import AtlasError
from ecg_atlas.index.schema import BOOL_TEXT, check_metadata_name

#: What separates the labels of a label-list value in text ("AF;RBBB").
LABEL_SEPARATOR = ";"


def text_column_parser(values: Sequence[str], *, labels: bool | None = None):
    """How to read one text column (a CSV column) into typed metadata values: the function to
    apply to each non-empty value.

    labels: True reads label lists, False never does, None decides from the values: a column is
    a label list when some value holds ``;`` and every item of every value is one token without
    spaces (codes such as ``AF_AFL;STACH`` or ``NORM:100;SR:0``), so prose that happens to hold a
    ``;`` stays text. Otherwise the first of integer, float, boolean (``BOOL_TEXT``) and text that
    reads every value.
    """
    present = [v for v in values if v != ""]
    if labels is None:
        items = [x.strip() for v in present for x in v.split(LABEL_SEPARATOR)]
        labels = any(LABEL_SEPARATOR in v for v in present) and all(x and not any(c.isspace() for c in x)
                                                                     for x in items if x)
    if labels:
        return lambda v: [x.strip() for x in v.split(LABEL_SEPARATOR) if x.strip()]
    for parse in (int, float, _text_bool):
        try:
            for v in present:
                parse(v)
            return parse
        except ValueError:
            continue
    return str


def _text_bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in BOOL_TEXT or lowered in ("1", "0"):  # 1 / 0 alone read as integers
        raise ValueError(value)
    return BOOL_TEXT[lowered]


@dataclass(frozen=True)
class Manifest:
    """A manifest's table. ``text``: read from CSV, every cell a string ("" for an empty one)."""

    path: Path
    table: object  # pyarrow.Table
    text: bool

    @property
    def columns(self) -> list[str]:
        return list(self.table.column_names)

    def raw(self, column: str) -> list[str | None]:
        """A column as written, for ids, paths and patient ids (never typed); None where empty."""
        return [None if v is None or v == "" else str(v) for v in self.table.column(column).to_pylist()]

    def typed(self, column: str, *, labels: bool | None = None) -> list:
        """A column's metadata values under the one typing rule (module docstring); None where
        empty. `labels` as for `text_column_parser` (CSV only: Parquet columns keep their types)."""
        values = self.table.column(column).to_pylist()
        if not self.text:
            return [None if v is None or v == "" else v for v in values]
        parse = text_column_parser(values, labels=labels)
        return [None if v == "" else parse(v) for v in values]

    def metadata_rows(self, names: Mapping[str, str], label_columns: Sequence[str] = ()) -> list[dict]:
        """Each row's metadata: {stored name: typed value} for the columns `names` maps (column ->
        stored name), empty cells left out."""
        typed = {names[c]: self.typed(c, labels=True if c in label_columns else None) for c in names}
        rows: list[dict] = [{} for _ in range(self.table.num_rows)]
        for name, values in typed.items():
            for row, value in zip(rows, values):
                if value is not None:
                    row[name] = value
        return rows


def read_manifest(path: str | Path) -> Manifest:
    """A CSV (read as text) or Parquet (``.parquet``) manifest; AtlasError when it cannot be read."""
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    path = Path(path)
    try:
        if path.suffix.lower() == ".parquet":
            return Manifest(path, pq.read_table(path), text=False)
        with open(path, newline="", encoding="utf-8-sig") as f:
            header = next(csv.reader(f), [])
        table = pacsv.read_csv(path, parse_options=pacsv.ParseOptions(newlines_in_values=True),
                               convert_options=pacsv.ConvertOptions(column_types={c: pa.string() for c in header},
                                                                    strings_can_be_null=False))
    except OSError as exc:
        raise AtlasError(f"cannot read manifest {path}: {exc.strerror or exc}") from exc
    except (ValueError, UnicodeDecodeError, csv.Error, pa.ArrowException) as exc:
        raise AtlasError(f"cannot read manifest {path}: {exc}") from exc
    return Manifest(path, table, text=True)


def usable_name(name: str) -> bool:
    """Whether `name` can be a user metadata column as it is (not a fixed store field)."""
    try:
        check_metadata_name(name)
    except AtlasError:
        return False
    return True


def read_metadata_csv(path: Path, id_column: str, patient_column: str | None,
                      columns: list[str] | None, label_columns: Sequence[str] = ()
                      ) -> tuple[dict[str, str | None], dict[str, dict]]:
    """(ecg_id -> patient_id, ecg_id -> typed metadata) from a metadata CSV (`ecg-atlas ingest
    --metadata`): `columns` (default: every column usable as a metadata name, but the id and
    patient columns), `label_columns` read as label lists."""
    manifest = read_manifest(path)
    header = manifest.columns
    if id_column not in header:
        raise AtlasError(f"{path} has no column {id_column!r} (columns: {', '.join(header)}); pass --id-column")
    if patient_column is None and "patient_id" in header:
        patient_column = "patient_id"
    if patient_column is not None and patient_column not in header:
        raise AtlasError(f"{path} has no column {patient_column!r}; pass --patient-column")
    if columns is None:  # every column that can be user metadata (not a fixed store field like duration_s)
        wanted = [c for c in header if c not in (id_column, patient_column) and usable_name(c)]
    else:
        wanted = columns
        unknown = [c for c in wanted if c not in header]
        if unknown:
            raise AtlasError(f"{path} has no column(s) {', '.join(unknown)}")
        for c in wanted:
            check_metadata_name(c)
    ids = manifest.raw(id_column)
    patient_ids = manifest.raw(patient_column) if patient_column else [None] * len(ids)
    rows = manifest.metadata_rows({c: c for c in wanted}, label_columns)
    patients, metadata = {}, {}
    for ecg_id, patient_id, row in zip(ids, patient_ids, rows):
        if ecg_id is not None:
            patients[ecg_id] = patient_id
            metadata[ecg_id] = row
    return patients, metadata
