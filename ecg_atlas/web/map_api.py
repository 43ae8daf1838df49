"""The cohort map's JSON API: a cluster run's 2-D map, colouring columns, ECG thumbnails, the run's
enrichment table, and what a selection on the map holds.

Every answer comes from an RPC of the gRPC server (``GetClusterRun``, ``Export``, ``GetSignal``,
``UpdateMetadata``); ids travel in query strings or bodies, never in paths. Shared request helpers
(errors, JSON bodies, the client per bearer token) are ``api.py``'s.

* ``/api/map?run=``: ids, coordinates (base64 float32) and clusters of every ECG in the run.
* ``/api/map-column?run=&name=``: one metadata column in the run's order. A label-list column
  (``VARCHAR[]``) comes as its labels by count and, per ECG, the indexes of the labels it holds
  (null: the column is unknown for that ECG), so the page colours by "contains LABEL" and
  switches label without asking again.
* ``/api/map-enrichment?run=``: the run's enrichment table (enrichment.csv, kept beside the run).
* ``/api/thumb?id=``: one lead (II when recorded) of a stored ECG, as a min/max envelope small
  enough for a hover thumbnail.
* ``POST /api/selection``, ``POST /api/cohort``: a selection's label prevalence inside vs outside;
  saving it as a boolean metadata column.
"""

from __future__ import annotations

import csv
import io
import math

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ecg_atlas.client import Client
from ecg_atlas.index.schema import MAX_RESULT_NAME_LENGTH
from ecg_atlas.jsonable import jsonable

from .api import COHORT_NAME, HIDDEN_COLUMNS, BadRequest, Clients, _text_field, _text_list, json_object

NUMERIC_TYPES = ("DOUBLE", "FLOAT", "BIGINT", "INTEGER", "SMALLINT", "TINYINT", "HUGEINT", "UBIGINT", "UINTEGER")
#: the lead a thumbnail shows when the ECG has it (the rhythm strip's lead), else its first lead
THUMB_LEAD = "II"
#: seconds and min/max bins of a thumbnail: 10 s in 300 bins (600 values) keep every QRS visible
THUMB_S, THUMB_BINS = 10.0, 300
#: enrichment.csv's number columns (the rest stay text)
_ENRICHMENT_INTS = ("cluster", "size", "age_known", "female", "male", "sex_unknown", "positive_in", "n_in",
                    "positive_out", "n_out")
_ENRICHMENT_FLOATS = ("age_median", "age_q1", "age_q3", "prevalence_in", "prevalence_out", "odds_ratio",
                      "p_value", "q_value")


def typed(array: np.ndarray, dtype) -> str:
    """A numeric column as base64 little-endian bytes: the browser reads it as a typed array."""
    import base64

    return base64.b64encode(np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode()


def column_kind(sql_type: str) -> str:
    """How the map colours a column of this DuckDB type: numeric, labels (a list) or category."""
    if sql_type.endswith("[]"):
        return "labels"
    return "numeric" if sql_type in NUMERIC_TYPES or sql_type.startswith("DECIMAL") else "category"


def label_codes(values: list, column: str = "") -> tuple[list[dict], list[list[int] | None]]:
    """A label-list column as (its labels, most frequent first, with counts and how each is shown
    (a SNOMED CT code with its name); per row the indexes of the labels it holds, or None where the
    column is unknown)."""
    from ecg_atlas.labels import display_value

    counts: dict[str, int] = {}
    for row in values:
        for label in set(row or ()):
            if label is not None:
                counts[label] = counts.get(label, 0) + 1
    order = sorted(counts, key=lambda label: (-counts[label], label))
    index = {label: i for i, label in enumerate(order)}
    codes = [None if row is None else sorted({index[label] for label in row if label is not None}) for row in values]
    return [{"label": label, "count": counts[label], "shown": str(display_value(column, label))}
            for label in order], codes


def thumbnail(signal: np.ndarray, fs: float, lead_names: list[str]) -> dict:
    """One lead's first ``THUMB_S`` seconds, centred on its median, as a min/max envelope: each bin's
    two extremes in the order they occur (NaN gaps travel as null)."""
    from ecg_atlas.analysis.ecg_paper import centred
    from ecg_atlas.embedder.leads import canonical_lead_name

    names = [canonical_lead_name(n) for n in lead_names]
    row = names.index(THUMB_LEAD) if THUMB_LEAD in names else 0
    n = min(signal.shape[1], int(round(THUMB_S * fs)))
    trace = centred(np.asarray(signal[row, :n], dtype=np.float64))
    edges = np.linspace(0, n, min(THUMB_BINS, n) + 1).astype(int)
    y: list[float | None] = []
    for start, stop in zip(edges[:-1], edges[1:]):
        part = trace[start:stop]
        finite = np.flatnonzero(np.isfinite(part))
        if not len(finite):
            y += [None, None]
            continue
        lo, hi = finite[np.argmin(part[finite])], finite[np.argmax(part[finite])]
        first, second = sorted((lo, hi))
        y += [round(float(part[first]), 3), round(float(part[second]), 3)]
    return {"lead": names[row] or str(lead_names[row]), "seconds": round(n / fs, 2),
            "duration_s": round(signal.shape[1] / fs, 2), "y": y}


def parse_enrichment(enrichment_csv: str) -> dict:
    """enrichment.csv (analysis.enrichment.EnrichmentTable.to_csv: one row per cluster and label,
    the cluster's summary repeated) as {"clusters": [summary...], "labels": [row...]}; each label
    also as shown (a SNOMED CT code with its name)."""
    from ecg_atlas.labels import label_display

    clusters: dict[int, dict] = {}
    labels = []
    for raw in csv.DictReader(io.StringIO(enrichment_csv)):
        row = {k: _number(k, v) for k, v in raw.items() if k is not None}
        summary = {k: row.get(k) for k in ("cluster", "size", "age_median", "age_q1", "age_q3", "age_known",
                                           "female", "male", "sex_unknown")}
        if summary["cluster"] is not None:
            clusters.setdefault(summary["cluster"], summary)
        if row.get("label"):
            labels.append({**{k: row.get(k) for k in ("cluster", "label", "positive_in", "n_in", "positive_out",
                                                       "n_out", "prevalence_in", "prevalence_out", "odds_ratio",
                                                       "p_value", "q_value")},
                           "shown": label_display(row["label"])})
    labels.sort(key=lambda r: (r["q_value"] is None, r["q_value"] if isinstance(r["q_value"], float) else 0,
                               r["p_value"] if isinstance(r["p_value"], float) else 1))
    return {"clusters": [clusters[c] for c in sorted(clusters)], "labels": labels}


def _number(key: str, text: str | None):
    if text is None or text == "":
        return None
    if key in _ENRICHMENT_INTS:
        return int(float(text))
    if key in _ENRICHMENT_FLOATS:
        value = float(text)
        return "inf" if math.isinf(value) else value  # JSON has no infinity: an odds ratio says "inf"
    return text


def label_columns(enrichment_csv: str) -> list[str]:
    """The columns whose labels a run's enrichment table tested (``label_groups:AF_AFL`` -> label_groups)."""
    found = []
    for row in csv.DictReader(io.StringIO(enrichment_csv)):
        label = row.get("label") or ""
        column = label.split(":", 1)[0].split("=", 1)[0]
        if column and column not in found:
            found.append(column)
    return found or ["label_groups"]


class MapApi:
    """The map's endpoints, over the clients of one upstream server."""

    def __init__(self, clients: Clients):
        self.clients = clients

    def routes(self) -> list[Route]:
        return [
            Route("/api/runs", self.runs),
            Route("/api/map", self.map),
            Route("/api/map-column", self.map_column),
            Route("/api/map-enrichment", self.map_enrichment),
            Route("/api/thumb", self.thumb),
            Route("/api/selection", self.selection, methods=["POST"]),
            Route("/api/cohort", self.save_cohort, methods=["POST"]),
        ]

    def runs(self, request: Request):
        return JSONResponse({"runs": self.clients.for_request(request).list_cluster_runs()})

    def map(self, request: Request):
        run = request.query_params.get("run", "")
        kept = self.clients.for_request(request).cluster_run(run)
        table = kept["assignments"]
        return JSONResponse({
            "run": run, "n": table.num_rows, "ecg_ids": table.column("ecg_id").to_pylist(),
            "x": typed(table.column("map_x").to_numpy(), np.float32),
            "y": typed(table.column("map_y").to_numpy(), np.float32),
            "cluster": typed(table.column("cluster").to_numpy(), np.int32),
            "label_columns": label_columns(kept["enrichment_csv"]),
            "created_at": kept["record"].get("created_at"), "where": kept["record"].get("where", [])})

    def map_enrichment(self, request: Request):
        run = request.query_params.get("run", "")
        kept = self.clients.for_request(request).cluster_run(run)
        return JSONResponse(jsonable({"run": run, **parse_enrichment(kept["enrichment_csv"])}))

    def thumb(self, request: Request):
        ecg_id = request.query_params.get("id", "")
        if not ecg_id:
            raise BadRequest("say which stored ECG to draw: ?id=ECG_ID", reason="no_query")
        recording = self.clients.for_request(request).get_signal(ecg_id)
        return JSONResponse({"ecg_id": ecg_id, **thumbnail(np.asarray(recording.signal), float(recording.fs),
                                                           list(recording.lead_names))})

    @staticmethod
    def column_for_ids(client: Client, ecg_ids: list[str], columns: list[str]) -> dict[str, list]:
        """Metadata `columns` of `ecg_ids` (in that order), read through the Export RPC."""
        position = {ecg_id: i for i, ecg_id in enumerate(ecg_ids)}
        values = {c: [None] * len(ecg_ids) for c in columns}
        for batch in client.export(columns=columns, vectors=False):
            rows = [position.get(i) for i in batch.column("ecg_id").to_pylist()]
            for c in columns:
                for row, v in zip(rows, batch.column(c).to_pylist()):
                    if row is not None:
                        values[c][row] = v
        return values

    def map_column(self, request: Request):
        run, name = request.query_params.get("run", ""), request.query_params.get("name", "")
        client = self.clients.for_request(request)
        types = client.info()["columns"]
        if name not in types or name in HIDDEN_COLUMNS:
            raise BadRequest(f"no metadata column {name!r} to colour by", reason="unknown_column")
        ids = client.cluster_run(run)["assignments"].column("ecg_id").to_pylist()
        values = self.column_for_ids(client, ids, [name])[name]
        kind = column_kind(types[name])
        if kind == "labels":  # colour by "contains LABEL": the labels once, each ECG's as indexes
            labels, codes = label_codes(values, name)
            return JSONResponse({"name": name, "kind": kind, "labels": labels, "codes": codes})
        if kind == "category":
            values = [None if v is None else str(v) for v in values]
        return JSONResponse({"name": name, "kind": kind, "values": jsonable(values)})

    async def selection(self, request: Request):
        body = await json_object(request)
        selection = (_text_field(body, "run"), _text_list(body, "ecg_ids") or [], _text_list(body, "label_columns"))
        from starlette.concurrency import run_in_threadpool

        return await run_in_threadpool(self._selection, request, *selection)

    def _selection(self, request: Request, run: str, ecg_ids: list[str], asked_columns: list[str] | None):
        from ecg_atlas.analysis.enrichment import benjamini_hochberg, enrichment
        from ecg_atlas.analysis.targets import build_targets

        chosen = set(ecg_ids)
        client = self.clients.for_request(request)
        kept = client.cluster_run(run)
        ids = kept["assignments"].column("ecg_id").to_pylist()
        inside = np.array([i in chosen for i in ids])
        types = client.info()["columns"]
        tested = [c for c in asked_columns or label_columns(kept["enrichment_csv"]) if c in types]
        extras = [c for c in ("age", "sex") if c in types]
        values = self.column_for_ids(client, ids, list(dict.fromkeys([*tested, *extras])))
        names, cols = [], []
        for column in tested:
            spec = f"{column}:*" if types[column].endswith("[]") else column
            targets = build_targets([spec], values, types)
            names += targets.labels
            cols.append(targets.y)
        matrix = np.column_stack(cols) if cols else np.empty((len(ids), 0))
        table = enrichment(inside.astype(int), matrix, names, ages=values.get("age"), sexes=values.get("sex"))
        rows = [r for r in table.labels if r.cluster == 1]
        q = benjamini_hochberg([r.p_value for r in rows])  # over the selection's own tests only
        summary = {c.cluster: c for c in table.clusters}
        return JSONResponse(jsonable({
            "run": run, "n_selected": int(inside.sum()), "n_run": len(ids),
            "not_in_run": len(chosen - set(ids)),
            "inside": summary.get(1).__dict__ if 1 in summary else None,
            "outside": summary.get(0).__dict__ if 0 in summary else None,
            "labels": sorted(({"label": r.label, "positive_in": r.positive_in, "n_in": r.n_in,
                               "positive_out": r.positive_out, "n_out": r.n_out, "prevalence_in": r.prevalence_in,
                               "prevalence_out": r.prevalence_out, "odds_ratio": r.odds_ratio,
                               "p_value": r.p_value, "q_value": float(qv)} for r, qv in zip(rows, q)),
                             key=lambda r: (math.isnan(r["p_value"]), r["p_value"]))}))

    async def save_cohort(self, request: Request):
        body = await json_object(request)
        name = _text_field(body, "name").strip().lower()
        if not COHORT_NAME.match(name):
            raise BadRequest(f"cohort name {name[:60]!r}: use a letter, then letters, digits or _ "
                             f"(at most {MAX_RESULT_NAME_LENGTH})",
                             reason="bad_cohort_name")
        ecg_ids = list(dict.fromkeys(_text_list(body, "ecg_ids") or []))
        if not ecg_ids:
            raise BadRequest("select some ECGs first", reason="empty_selection")
        column = f"cohort_{name}"
        from starlette.concurrency import run_in_threadpool

        client = self.clients.for_request(request)
        updated = await run_in_threadpool(client.update_metadata, {i: {column: True} for i in ecg_ids})
        return JSONResponse({"column": column, "updated": updated, "filter": f"{column}=true"})
