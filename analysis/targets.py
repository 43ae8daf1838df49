"""Probe targets from store metadata: which columns (or labels of a label-list column) to predict.

A target spec is one string; several make a multi-label probe:

* ``COLUMN:LABEL`` — LABEL is in the label-list column (``label_groups:AF_AFL``); a NULL list means
  unknown, an empty list means "none of the labels".
* ``COLUMN:*`` (or a bare label-list ``COLUMN``) — every label that occurs in that column.
* ``COLUMN=VALUE`` — the column equals VALUE (``sex=F``, ``strat_fold=10``); NULL means unknown.
* ``COLUMN`` — a boolean (or 0/1) column is a binary label; a text or integer column with three or
  more values is a **multi-class** target (it must then be the only spec). A column with exactly
  two values must say which is positive (``sex=F``): guessing would silently flip the meaning.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from ecg_atlas.errors import AtlasError

from .probe import BINARY, MULTICLASS, MULTILABEL, Targets

LABELS_TYPE = "VARCHAR[]"


def spec_columns(specs: Sequence[str]) -> list[str]:
    """The metadata columns the specs read."""
    out = []
    for spec in specs:
        name = _split(spec)[0]
        if name not in out:
            out.append(name)
    return out


def _split(spec: str) -> tuple[str, str | None, str | None]:
    """(column, op, value) with op in {':', '=', None}."""
    spec = spec.strip()
    for op in (":", "="):
        if op in spec:
            column, _, value = spec.partition(op)
            return column.strip(), op, value.strip()
    return spec, None, None


def build_targets(specs: Sequence[str], values: Mapping[str, Sequence[object]],
                  column_types: Mapping[str, str]) -> Targets:
    """Targets for the cohort whose metadata `values` (column -> one value per ECG) are given."""
    if not specs:
        raise AtlasError("name at least one target (e.g. label_groups:AF_AFL, sex=F, or a multi-class column)")
    columns: list[str] = []
    y_cols: list[np.ndarray] = []
    for spec in specs:
        column, op, value = _split(spec)
        if column not in column_types:
            raise AtlasError(f"target {spec!r}: no column {column!r} in the store; "
                             f"columns: {', '.join(sorted(column_types))}")
        col_type = column_types[column]
        data = list(values[column])
        if col_type == LABELS_TYPE:
            if op == "=":
                raise AtlasError(f"target {spec!r}: {column!r} is a label list; write {column}:LABEL")
            wanted = [value] if op == ":" and value != "*" else _all_labels(data)
            for label in wanted:
                columns.append(f"{column}:{label}")
                y_cols.append(np.array([np.nan if v is None else float(label in v) for v in data]))
            continue
        if op == ":":
            raise AtlasError(f"target {spec!r}: {column!r} is not a label list ({col_type}); write {column}=VALUE")
        if op == "=":
            columns.append(f"{column}={value}")
            y_cols.append(np.array([np.nan if v is None else float(_same(v, value)) for v in data]))
            continue
        distinct = sorted({_key(v) for v in data if v is not None})
        if col_type == "BOOLEAN" or set(distinct) <= {"0", "1"}:
            columns.append(column)
            y_cols.append(np.array([np.nan if v is None else float(bool(v)) for v in data]))
            continue
        if len(distinct) == 2:
            raise AtlasError(f"target {spec!r}: {column!r} has two values ({distinct[0]}, {distinct[1]}); write "
                             f"{column}={distinct[0]} or {column}={distinct[1]} to say which is the positive class")
        if col_type in ("DOUBLE", "FLOAT"):
            raise AtlasError(f"target {spec!r}: {column!r} is a continuous number; probes classify. Store a "
                             f"derived label (e.g. a boolean age_over_60) and probe that")
        if len(specs) != 1:
            raise AtlasError(f"target {spec!r} is multi-class ({len(distinct)} values); a multi-class target must "
                             f"be the only target")
        y = np.full((len(data), len(distinct)), np.nan)
        for i, v in enumerate(data):
            if v is not None:
                y[i] = 0.0
                y[i, distinct.index(_key(v))] = 1.0
        return Targets(MULTICLASS, [f"{column}={d}" for d in distinct], y)
    if not columns:
        raise AtlasError(f"targets {list(specs)} name no label that occurs in this cohort")
    kind = BINARY if len(columns) == 1 else MULTILABEL
    return Targets(kind, columns, np.column_stack(y_cols))


def _all_labels(data: Sequence[object]) -> list[str]:
    counts = Counter(label for v in data if v is not None for label in v)
    return [label for label, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _key(value: object) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def _same(value: object, wanted: str) -> bool:
    if isinstance(value, bool):
        return value == (wanted.lower() in ("true", "1", "yes"))
    return _key(value) == wanted
