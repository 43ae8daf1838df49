"""Labelled ECGs for a fine-tuning run, from files + a manifest, a store, or a server's store.

Three catalogues offer the same things — record ids, patient ids, typed metadata, the filter
language over that metadata, and each record's signal — and one function (``build``) turns any
of them into a ``FinetuneData``:

* ``ManifestFiles`` — ECG files under the paths given, matched to a manifest's id column
  (``ecg_atlas.ingest.manifest``: the one reader and typing rule of ``ingest``). Filters run on
  the manifest loaded into an in-memory DuckDB table through ``index.filters.compile_filter``,
  the store's own filter compiler, so ``--train "strat_fold <= 8"`` means the same here as in a
  search. Files are read with the embedder's readers.
* ``StoreRows`` — a store directory opened read-only: its metadata and its own signal copies
  (``analysis.signals.SignalSource``).
* ``ServerRows`` — a server's store through ``ecg_atlas.client``: Export (metadata, filtered by the
  server), Info (column types) and GetSignal (the store's signal copies). The server never opens
  a path of the client's.

Targets are ``analysis.targets.build_targets`` (what ``probe train --target`` takes); splits are
the three filters, or, without filters, the probes' random split by patient
(``analysis.splits.split_by_patient``). Every record is prepared by the base encoder's own
``prepare()``; a record that cannot be read or prepared is one refusal, counted by reason
(``ecg_atlas.refusal``), never the end of the run. What cannot make a fair run is refused with a
``TrainingDataError`` and a reason code: ``too_few_positives``, ``empty_split``,
``overlapping_splits``, ``no_matching_records``, ``no_readable_records``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ecg_atlas.analysis.probe import DEFAULT_MIN_POSITIVES, Targets
from ecg_atlas.analysis.splits import SPLITS, TEST, TRAIN, VAL, check_patient_disjoint, patient_groups, split_by_patient
from ecg_atlas.analysis.targets import build_targets, spec_columns
from ecg_atlas.errors import AtlasError, FilterError, TrainingDataError
from ecg_atlas.refusal import read_refusal

from .types import MULTICLASS, FinetuneData

log = logging.getLogger(__name__)

#: The probes' default random split by patient (train, val, test shares), used when no filter is given.
DEFAULT_FRACTIONS = (0.7, 0.1, 0.2)
#: Records read and prepared ahead on threads.
READ_WORKERS = 2
_ROW = "__finetune_row__"


@dataclass(frozen=True)
class Selection:
    """What to train on: target specs and the split (three filters, or a random split by patient)."""

    targets: tuple[str, ...]
    train: str | None = None
    val: str | None = None
    test: str | None = None
    seed: int = 0
    min_positives: int = DEFAULT_MIN_POSITIVES
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS

    @staticmethod
    def target_specs(values: Sequence[str]) -> tuple[str, ...]:
        """``--target`` values, each possibly comma-separated (``NORM,MI,STTC``), as one list of specs."""
        return tuple(s.strip() for v in values for s in v.split(",") if s.strip())

    @property
    def filters(self) -> dict[str, str]:
        return {part: text for part, text in ((TRAIN, self.train), (VAL, self.val), (TEST, self.test)) if text}

    def describe(self) -> dict:
        return {"targets": list(self.targets), "filters": self.filters, "seed": self.seed,
                "min_positives": self.min_positives,
                "split_method": "filters" if self.filters else f"random by patient {list(self.fractions)}"}


# ---------------------------------------------------------------------------------------------
# Catalogues: where the records, their metadata and their signals come from


class Catalogue:
    """Rows a source offers. Subclasses fill ``ids``, ``patients``, ``column_types`` and ``facts``."""

    kind = ""
    ids: list[str]
    patients: list[str | None]
    column_types: dict[str, str]
    facts: dict

    def values(self, columns: Sequence[str]) -> dict[str, list]:
        """Typed metadata values of `columns`, one per row."""
        raise NotImplementedError

    def matching(self, text: str) -> np.ndarray:
        """Boolean mask over the rows: which match filter `text` (the search filter language)."""
        raise NotImplementedError

    def recording(self, row: int):
        """The `Recording` of row `row` (raises what the read raised)."""
        raise NotImplementedError

    def _check_columns(self, columns: Sequence[str]) -> None:
        missing = [c for c in columns if c not in self.column_types]
        if missing:
            raise AtlasError(f"column(s) {', '.join(missing)} not in the {self.kind}; columns: "
                             f"{', '.join(sorted(self.column_types))}")


class ManifestFiles(Catalogue):
    """ECG files under `paths`, each matched to the manifest row whose `id_column` equals its id
    (its path relative to the folder named, without extension: ``fold01/ptbxl_00149``)."""

    kind = "manifest"

    def __init__(self, paths: Sequence[str | Path], manifest: str | Path, id_column: str,
                 patient_column: str | None = None) -> None:
        import duckdb
        import pyarrow as pa

        from ecg_atlas.embedder.discover import find_ecgs
        from ecg_atlas.ingest.manifest import read_manifest

        table = read_manifest(manifest)
        header = table.columns
        if id_column not in header:
            raise AtlasError(f"{manifest} has no column {id_column!r} (columns: {', '.join(header)}); "
                             f"pass --id-column")
        if patient_column is None and "patient_id" in header:
            patient_column = "patient_id"
        if patient_column is not None and patient_column not in header:
            raise AtlasError(f"{manifest} has no column {patient_column!r}; pass --patient-column")
        manifest_ids = table.raw(id_column)
        row_of: dict[str, int] = {}
        duplicates = 0
        for i, ecg_id in enumerate(manifest_ids):
            if ecg_id is None:
                continue
            if ecg_id in row_of:
                duplicates += 1
                continue
            row_of[ecg_id] = i
        if duplicates:
            raise AtlasError(f"{manifest}: {duplicates} id(s) of column {id_column!r} occur more than once; "
                             f"one row per ECG")
        sources = list(find_ecgs(paths))
        matched = [s for s in sources if s.ecg_id in row_of]
        if not matched:
            first = sources[0].ecg_id if sources else None
            deeper = first is not None and any(key.endswith("/" + first) for key in row_of)
            raise TrainingDataError(
                f"none of the {len(sources)} ECG files found matches a row of {manifest} on {id_column!r} (a file's "
                f"id is its path relative to the folder named, without extension"
                + ("; the manifest's ids hold more of the path: name the folder they are relative to" if deeper
                   else "") + ")",
                reason="no_matching_records", details={"files": len(sources), "manifest_rows": len(row_of)})
        self.sources = matched
        rows = [row_of[s.ecg_id] for s in matched]
        self.ids = [s.ecg_id for s in matched]
        patients = table.raw(patient_column) if patient_column else [None] * len(manifest_ids)
        self.patients = [patients[i] for i in rows]
        self.facts = {"files": len(sources), "manifest_rows": len(row_of), "matched": len(matched),
                      "without_manifest_row": len(sources) - len(matched)}
        arrays = {}
        for column in header:
            if column in (id_column, patient_column):
                continue
            typed = table.typed(column)
            arrays[column] = _arrow([typed[i] for i in rows], pa)
        arrays[_ROW] = pa.array(range(len(rows)), pa.int64())
        self._con = duckdb.connect(":memory:")
        self._con.register("manifest", pa.table(arrays))
        described = self._con.execute("DESCRIBE manifest").fetchall()
        self.column_types = {name: typ.upper() for name, typ, *_ in described if name != _ROW}
        self._values = {c: arrays[c].to_pylist() for c in self.column_types}

    def values(self, columns: Sequence[str]) -> dict[str, list]:
        self._check_columns(columns)
        return {c: self._values[c] for c in columns}

    def matching(self, text: str) -> np.ndarray:
        from ecg_atlas.index.filters import compile_filter, parse_filter
        from ecg_atlas.index.schema import Column

        columns = {name: Column(name, typ, True) for name, typ in self.column_types.items()}
        try:
            sql, params = compile_filter(parse_filter(text), columns)
        except FilterError as exc:
            raise FilterError(f"filter {text!r} on the manifest: {exc}") from None
        mask = np.zeros(len(self.ids), dtype=bool)
        hits = self._con.execute(f'SELECT "{_ROW}" FROM manifest WHERE {sql}', params).fetchall()
        mask[[h[0] for h in hits]] = True
        return mask

    def recording(self, row: int):
        from ecg_atlas.embedder.discover import read_source

        return read_source(self.sources[row])


def _arrow(values: list, pa):
    """A typed manifest column as an Arrow array (an all-empty column is text)."""
    if all(v is None for v in values):
        return pa.array(values, pa.string())
    return pa.array(values)


class StoreRows(Catalogue):
    """Every ECG of an open store (read-only), with its metadata and its own signal copy."""

    kind = "store"

    def __init__(self, store) -> None:
        from ecg_atlas.analysis.signals import SignalSource

        if store.info().identity is None:
            raise AtlasError("the store is empty: ingest labelled ECGs before fine-tuning on it")
        self.store = store
        self.column_types = dict(store.columns())
        self.ids, self.patients = [], []
        for batch in store.iter_batches(columns=["patient_id"]):
            self.ids.extend(batch.column("ecg_id").to_pylist())
            self.patients.extend(batch.column("patient_id").to_pylist())
        self._row = {e: i for i, e in enumerate(self.ids)}
        self._signals = SignalSource(store)
        self._kept: OrderedDict = OrderedDict()  # ecg_id -> stored copy, read ahead by `recording`
        self._lock = threading.Lock()
        self.facts = {"stored": len(self.ids)}

    def values(self, columns: Sequence[str]) -> dict[str, list]:
        self._check_columns(columns)
        out: dict[str, list] = {c: [None] * len(self.ids) for c in columns}
        for batch in self.store.iter_batches(columns=list(columns)):
            rows = [self._row[e] for e in batch.column("ecg_id").to_pylist()]
            for c in columns:
                for r, v in zip(rows, batch.column(c).to_pylist()):
                    out[c][r] = v
        return out

    def matching(self, text: str) -> np.ndarray:
        from ecg_atlas.index.filters import parse_filter

        mask = np.zeros(len(self.ids), dtype=bool)
        for batch in self.store.iter_batches(filter=parse_filter(text), columns=["ecg_id"]):
            mask[[self._row[e] for e in batch.column("ecg_id").to_pylist() if e in self._row]] = True
        return mask

    def recording(self, row: int):
        """The row's Recording. Stored copies are read a batch of rows at a time (one query costs
        what one row does); a bounded cache holds the rest of the batch for the next calls."""
        from ecg_atlas.analysis.signals import BATCH

        ecg_id = self.ids[row]
        with self._lock:
            if ecg_id not in self._kept:
                self._kept.update(self.store.signals(self.ids[row:row + BATCH]))
                while len(self._kept) > 4 * BATCH:
                    self._kept.popitem(last=False)
            kept = self._kept.pop(ecg_id)
        return self._signals.recording(ecg_id, kept)


class ServerRows(Catalogue):
    """Every ECG of a server's store, through the client: Export for metadata (the server applies
    the filters), Info for column types, GetSignal for the store's signal copies."""

    kind = "server's store"

    def __init__(self, client) -> None:
        self.client = client
        self.column_types = dict(client.info().get("columns", {}))
        self.ids, self.patients = [], []
        for batch in client.export(columns=["patient_id"], vectors=False, timeout=None):
            self.ids.extend(batch.column("ecg_id").to_pylist())
            self.patients.extend(batch.column("patient_id").to_pylist())
        if not self.ids:
            raise AtlasError("the server's store is empty: ingest labelled ECGs before fine-tuning on it")
        self._row = {e: i for i, e in enumerate(self.ids)}
        self.facts = {"stored": len(self.ids)}

    def values(self, columns: Sequence[str]) -> dict[str, list]:
        self._check_columns(columns)
        out: dict[str, list] = {c: [None] * len(self.ids) for c in columns}
        for batch in self.client.export(columns=list(columns), vectors=False, timeout=None):
            rows = [self._row.get(e) for e in batch.column("ecg_id").to_pylist()]
            for c in columns:
                for r, v in zip(rows, batch.column(c).to_pylist()):
                    if r is not None:
                        out[c][r] = v
        return out

    def matching(self, text: str) -> np.ndarray:
        mask = np.zeros(len(self.ids), dtype=bool)
        for batch in self.client.export(where=text, columns=["patient_id"], vectors=False, timeout=None):
            mask[[self._row[e] for e in batch.column("ecg_id").to_pylist() if e in self._row]] = True
        return mask

    def recording(self, row: int):
        return self.client.get_signal(self.ids[row], timeout=None)


# ---------------------------------------------------------------------------------------------
# From a catalogue to FinetuneData


@dataclass
class Intake:
    """What became of the source's records: counts only (no ids), for the report."""

    source: dict
    selection: dict
    left_out_no_label: int = 0
    left_out_no_split: int = 0
    refused: dict[str, int] = field(default_factory=dict)
    records: dict[str, int] = field(default_factory=dict)
    patients: dict[str, int] = field(default_factory=dict)
    segments: dict[str, int] = field(default_factory=dict)
    label_counts: dict[str, dict[str, list[int]]] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return dict(vars(self))


def build(catalogue: Catalogue, encoder, selection: Selection, *,
          on_event: Callable[[dict], None] | None = None) -> tuple[FinetuneData, Intake]:
    """Targets, split, signals prepared by `encoder`, checks: the run's data and what became of each record."""
    if not selection.targets:
        raise AtlasError("name at least one target (--target), e.g. NORM,MI or label_groups:AF_AFL or sex=F")
    filters = selection.filters
    if filters and (TRAIN not in filters or VAL not in filters):
        raise AtlasError("give both --train and --val filters (and --test if you want one), or none of them for "
                         "the probes' random split by patient")
    intake = Intake(dict(catalogue.facts, kind=catalogue.kind), selection.describe())
    targets = build_targets(selection.targets, catalogue.values(spec_columns(selection.targets)),
                            catalogue.column_types)
    groups = patient_groups(catalogue.patients, catalogue.ids)
    known = targets.known_rows()
    intake.left_out_no_label = int((~known).sum())
    split = _assign(catalogue, selection, targets, groups, known)
    intake.left_out_no_split = int((known & (split == "")).sum())
    _check_split(split, groups, targets, selection, filters)
    rows = np.flatnonzero(split != "")
    segments, kept, refused = _read(catalogue, encoder, rows, on_event)
    intake.refused = dict(Counter(refused))
    if not kept:
        raise TrainingDataError(f"none of the {len(rows)} selected records could be read and prepared "
                                f"({_reasons(intake.refused)})", reason="no_readable_records",
                                details={"selected": int(len(rows)), **intake.refused})
    rows = rows[kept]
    split = split[rows]
    targets = targets.subset(rows)
    groups = groups[rows]
    _check_split(split, groups, targets, selection, filters, after_reading=bool(refused))
    segment_record = np.repeat(np.arange(len(rows), dtype=np.int64), [len(s) for s in segments])
    all_segments = np.ascontiguousarray(np.concatenate(segments), dtype=np.float32)
    record_ids = [catalogue.ids[r] for r in rows]
    y = _task_y(targets)
    digest = data_digest(record_ids, targets.kind, targets.labels, y, split, segment_record, all_segments)
    data = FinetuneData(all_segments, segment_record, record_ids, groups, y, targets.kind, list(targets.labels),
                        split, digest)
    for part in SPLITS:
        in_part = split == part
        if in_part.any():
            intake.records[part] = int(in_part.sum())
            intake.patients[part] = int(len(np.unique(groups[in_part].astype(str))))
            intake.segments[part] = int(len(data.segments_in(part)))
    intake.label_counts = label_counts(targets, split)
    log.info("fine-tuning data: %s records, %s segments", intake.records, intake.segments)
    return data, intake


def _assign(catalogue: Catalogue, selection: Selection, targets: Targets, groups: np.ndarray,
            known: np.ndarray) -> np.ndarray:
    """"train" / "val" / "test" / "" per row: from the filters, else the probes' split by patient."""
    filters = selection.filters
    if not filters:
        split = np.full(len(known), "", dtype=object)
        rows = np.flatnonzero(known)
        split[rows] = split_by_patient(groups[rows], targets.y[rows], fractions=selection.fractions,
                                       seed=selection.seed)
        return split
    masks = {part: catalogue.matching(text) & known for part, text in filters.items()}
    both = [(a, b, int((masks[a] & masks[b]).sum())) for i, a in enumerate(masks) for b in list(masks)[i + 1:]]
    both = [(a, b, n) for a, b, n in both if n]
    if both:
        said = "; ".join(f"{n} record(s) match both --{a} and --{b}" for a, b, n in both)
        raise TrainingDataError(f"the splits overlap: {said}. Make the filters exclusive (e.g. --train "
                                f"'strat_fold <= 8' --val 'strat_fold = 9')", reason="overlapping_splits",
                                details={f"{a}_{b}": n for a, b, n in both})
    split = np.full(len(known), "", dtype=object)
    for part, mask in masks.items():
        split[mask] = part
    return split


def _check_split(split: np.ndarray, groups: np.ndarray, targets: Targets, selection: Selection,
                 filters: dict, *, after_reading: bool = False) -> None:
    """Refuse an empty split, a patient in two splits, or a label with too few positives."""
    when = " once unreadable records were left out" if after_reading else ""
    wanted = list(filters) if filters else [TRAIN, VAL]
    for part in wanted:
        if not (split == part).any():
            how = f"--{part} {filters[part]!r} selects" if part in filters else "the random split leaves"
            raise TrainingDataError(f"{how} no record with a known label{when}: a fine-tuning run needs "
                                    f"records in train and val", reason="empty_split", details={"split": part})
    try:
        check_patient_disjoint(split, groups, what="the --train/--val/--test filters")
    except AtlasError as exc:
        raise TrainingDataError(str(exc).replace("a probe must", "a model must"), reason="overlapping_splits") \
            from None
    counts = label_counts(targets, split)
    need = selection.min_positives
    for label, by_part in counts.items():
        for part in (TRAIN, VAL):
            pos, neg = by_part[part]
            if pos < need or (targets.kind != MULTICLASS and neg < need):
                which = "positives" if pos < need else "negatives"
                raise TrainingDataError(
                    f"target {label!r} has too few {which} in {part}{when}: {pos} positive / {neg} negative "
                    f"(train {by_part[TRAIN][0]}/{by_part[TRAIN][1]}, val {by_part[VAL][0]}/{by_part[VAL][1]}); "
                    f"need {need} of each (--min-positives). Choose a more common label, widen the split, "
                    f"or lower --min-positives", reason="too_few_positives",
                    details={"label": label, "split": part, "positive": pos, "negative": neg, "need": need})


def label_counts(targets: Targets, split: np.ndarray) -> dict[str, dict[str, list[int]]]:
    """{label: {part: [positives, negatives]}} over the records with that label known."""
    out: dict[str, dict[str, list[int]]] = {}
    for j, label in enumerate(targets.labels):
        out[label] = {}
        for part in SPLITS:
            col = targets.y[split == part, j]
            col = col[~np.isnan(col)]
            out[label][part] = [int((col > 0.5).sum()), int((col <= 0.5).sum())]
    return out


def _read(catalogue: Catalogue, encoder, rows: np.ndarray,
          on_event: Callable[[dict], None] | None) -> tuple[list[np.ndarray], list[int], list[str]]:
    """Each row's prepared windows (in row order), the positions read, and the refused reasons."""
    from ecg_atlas.embedder.prefetch import prefetch

    def work(row: int) -> np.ndarray:
        segments = encoder.prepare(catalogue.recording(int(row))).segments
        if len(segments) == 0:
            raise AtlasError("the ECG gives no window of the encoder's length")
        return np.asarray(segments, dtype=np.float32)

    segments, kept, refused = [], [], []
    total = len(rows)
    for done, (row, result) in enumerate(prefetch(list(rows), work, workers=READ_WORKERS), start=1):
        if isinstance(result, Exception):
            error = read_refusal(result, catalogue.ids[int(row)])
            refused.append(error.reason)
            log.debug("record %s refused: %s", catalogue.ids[int(row)], error)
        else:
            kept.append(done - 1)
            segments.append(result)
        if on_event is not None and (done == total or done % 50 == 0):
            on_event({"event": "data", "done": done, "total": total, "refused": len(refused)})
    return segments, kept, refused


def _reasons(refused: dict[str, int]) -> str:
    return ", ".join(f"{n} {reason}" for reason, n in refused.items()) or "none read"


def _task_y(targets: Targets) -> np.ndarray:
    """FinetuneData's y: the targets as they are, or (multi-class) the class index with NaN unknown."""
    y = np.asarray(targets.y, dtype=np.float32)
    if targets.kind != MULTICLASS:
        return y
    index = np.where(np.isnan(y).all(axis=1), np.nan, np.argmax(np.nan_to_num(y, nan=-1.0), axis=1))
    return index.astype(np.float32)[:, None]


def one_hot(data: FinetuneData, rows: np.ndarray | None = None) -> np.ndarray:
    """(R, L) 1 / 0 / NaN labels of `rows` (default all): a multi-class index expanded to one column per class."""
    y = data.y if rows is None else data.y[rows]
    if data.task != MULTICLASS:
        return np.asarray(y, dtype=float)
    out = np.zeros((len(y), len(data.labels)))
    index = y[:, 0]
    unknown = np.isnan(index)
    out[unknown] = np.nan
    out[np.flatnonzero(~unknown), index[~unknown].astype(int)] = 1.0
    return out


def data_digest(record_ids: Sequence[str], task: str, labels: Sequence[str], y: np.ndarray, split: np.ndarray,
                segment_record: np.ndarray, segments: np.ndarray) -> str:
    """sha256 over the record ids, the task and labels, the split, and every model-ready window."""
    h = hashlib.sha256()
    h.update(json.dumps({"ids": list(record_ids), "task": task, "labels": list(labels),
                         "split": [str(s) for s in split]}, sort_keys=True).encode())
    h.update(np.ascontiguousarray(y, dtype=np.float32).tobytes())
    h.update(np.ascontiguousarray(segment_record, dtype=np.int64).tobytes())
    flat = segments.reshape(len(segments), -1)
    for start in range(0, len(flat), 256):
        h.update(np.ascontiguousarray(flat[start:start + 256], dtype=np.float32).tobytes())
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------
# Entry points


def from_files(paths: Sequence[str | Path], manifest: str | Path, id_column: str, encoder, selection: Selection,
               *, patient_column: str | None = None,
               on_event: Callable[[dict], None] | None = None) -> tuple[FinetuneData, Intake]:
    """ECG files under `paths` labelled by a manifest (CSV or Parquet)."""
    return build(ManifestFiles(paths, manifest, id_column, patient_column), encoder, selection, on_event=on_event)


def from_store(path: str | Path, encoder, selection: Selection, *,
               on_event: Callable[[dict], None] | None = None) -> tuple[FinetuneData, Intake]:
    """A store directory no server holds, opened read-only."""
    from ecg_atlas.index import Store

    with Store.open(path, create=False, read_only=True, with_index=False) as store:
        return build(StoreRows(store), encoder, selection, on_event=on_event)


def from_server(client, encoder, selection: Selection, *,
                on_event: Callable[[dict], None] | None = None) -> tuple[FinetuneData, Intake]:
    """A server's store, through an open ``ecg_atlas.client.Client``."""
    return build(ServerRows(client), encoder, selection, on_event=on_event)
