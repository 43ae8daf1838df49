"""The atlas's JSON API: every answer comes from an RPC of the gRPC server it is a client of. The
cohort map's endpoints (/api/runs, /api/map*, /api/thumb, /api/selection, /api/cohort) are in
``map_api.py``; this module holds the rest and the request helpers both use.

Ids travel in query strings or bodies, never in paths (the access log writes paths). A browser
may send its own ``Authorization: Bearer TOKEN``; it is forwarded to the server, which decides
(a read token browses, saving a cohort needs write). Without one the web process's own token is
used. Failed calls answer ``{"error", "code", "reason"}`` with the gRPC status and its
``google.rpc.ErrorInfo`` reason; messages never quote a server path (``scrub_paths``).

JSON bodies are read by ``json_object`` (UTF-8, an object, parse errors of any kind a ``bad_json``
400) and their fields checked by type before use. A dropped file is read in a temporary folder
whose path never reaches the answer; whatever a reader raises becomes a reason-coded refusal.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import grpc
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from ecg_atlas.client import Client, error_info
from ecg_atlas.errors import AtlasError, without_paths
from ecg_atlas.index.schema import MAX_RESULT_NAME_LENGTH, name_rule
from ecg_atlas.jsonable import jsonable
from ecg_atlas.limits import MAX_SUGGESTED_IDS, SHOWN_K, WEB_MAX_K, WEB_SUGGESTED_IDS
from ecg_atlas.refusal import read_refusal

logger = logging.getLogger("ecg_atlas.web.api")

#: metadata columns shown with an ECG, in this order, when the store has them
KEY_METADATA = ("dataset", "age", "sex", "labels_abbr", "label_groups", "dx")
#: columns never sent to the browser (server-side file paths)
HIDDEN_COLUMNS = {"source", "source_path", "files"}
MAX_UPLOAD_BYTES = 64 * 1024 * 1024
#: a JSON body: a selection or cohort of ~100k ids of 15 characters (the web process needs ~85 MB
#: to parse and forward one of 270k short ids; 8 MiB would take ~330 MB)
MAX_JSON_BYTES = 2 * 1024 * 1024
COHORT_NAME = name_rule(MAX_RESULT_NAME_LENGTH)
_HTTP_STATUS = {
    "INVALID_ARGUMENT": 400, "OUT_OF_RANGE": 400, "FAILED_PRECONDITION": 409, "NOT_FOUND": 404,
    "ALREADY_EXISTS": 409, "PERMISSION_DENIED": 403, "UNAUTHENTICATED": 401, "RESOURCE_EXHAUSTED": 429,
    "UNAVAILABLE": 503, "DEADLINE_EXCEEDED": 504, "UNIMPLEMENTED": 501,
}


@dataclass
class Upstream:
    """How to reach the gRPC server: its address, TLS files and the web process's own token."""

    target: str
    token: str | None = None
    tls_ca: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    timeout: float = 60.0


class Clients:
    """One gRPC client per bearer token in use (a few at most), the default one first."""

    def __init__(self, upstream: Upstream, keep: int = 16):
        self.upstream = upstream
        self._keep = keep
        self._clients: OrderedDict[str | None, Client] = OrderedDict()
        self._lock = threading.Lock()

    def for_request(self, request: Request) -> Client:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        token = token.strip() if scheme.lower() == "bearer" and token.strip() else self.upstream.token
        with self._lock:
            client = self._clients.pop(token, None)
            if client is None:
                u = self.upstream
                client = Client(u.target, token=token, tls_ca=u.tls_ca, client_cert=u.client_cert,
                                client_key=u.client_key, timeout=u.timeout)
            self._clients[token] = client
            while len(self._clients) > self._keep:
                self._clients.popitem(last=False)[1].close()
            return client

    def close(self) -> None:
        with self._lock:
            for client in self._clients.values():
                client.close()
            self._clients.clear()


class BadRequest(AtlasError):
    """A request the web refuses before any RPC: HTTP `status` (400 unless said), gRPC-style `code`."""

    reason = "bad_request"

    def __init__(self, message: str, reason: str = "bad_request", status: int = 400,
                 code: str = "INVALID_ARGUMENT", details: dict | None = None):
        super().__init__(message)
        self.reason, self.status, self.code, self.details = reason, status, code, details or {}


def scrub_paths(text: str, names: dict[str, str] | None = None) -> str:
    """``text`` with each path of ``names`` (server path -> what to say instead) replaced, then any
    other absolute path cut to its last part."""
    for path, name in sorted((names or {}).items(), key=lambda item: -len(item[0])):
        text = text.replace(path, name)
    return without_paths(text)


def _scrubbed(details: dict, names: dict[str, str] | None = None) -> dict:
    return {k: scrub_paths(v, names) if isinstance(v, str) else v for k, v in (details or {}).items()}


def error_response(exc: Exception) -> JSONResponse:
    if isinstance(exc, grpc.RpcError):
        code = exc.code().name if hasattr(exc, "code") else "UNKNOWN"
        reason, details = error_info(exc)
        message = exc.details() if hasattr(exc, "details") else str(exc)
        return JSONResponse({"error": scrub_paths(message or ""), "code": code, "reason": reason or code.lower(),
                             "details": jsonable(_scrubbed(details))}, status_code=_HTTP_STATUS.get(code, 502))
    reason = getattr(exc, "reason", "invalid_request")
    return JSONResponse({"error": scrub_paths(str(exc)), "code": getattr(exc, "code", "INVALID_ARGUMENT"),
                         "reason": reason, "details": jsonable(_scrubbed(getattr(exc, "details", None) or {}))},
                        status_code=getattr(exc, "status", 400))


async def json_object(request: Request) -> dict:
    """The request's body as a JSON object; anything else is a 400 ``bad_json``, never a 500."""
    raw = await request.body()
    try:
        body = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8 text", reason="bad_json") from None
    except RecursionError:
        raise BadRequest("the request body's JSON is nested too deeply", reason="bad_json") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not valid JSON: {exc.msg} at character {exc.pos}",
                         reason="bad_json") from None
    except ValueError:  # e.g. an integer past Python's digit limit
        raise BadRequest("the request body's JSON holds a number too long to read", reason="bad_json") from None
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, not {_json_kind(body)}", reason="bad_json")
    return body


def _json_kind(value) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(type(value), "a number")


def _text_field(body: dict, name: str, default: str = "") -> str:
    value = body.get(name, default)
    if value is None:
        return default
    if not isinstance(value, str):
        raise BadRequest(f"{name} must be a string, not {_json_kind(value)}", reason=f"bad_{name}")
    return value


def _text_list(body: dict, name: str) -> list[str] | None:
    """A list of strings; missing or null is None."""
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadRequest(f"{name} must be an array of strings", reason=f"bad_{name}")
    return value


def whole_number(raw, name: str, default: int, low: int, high: int) -> int:
    """``raw`` (query or form text) as an int in [low, high]: ASCII digits only, never echoed long."""
    if raw is None or raw == "":
        return default
    text = raw if isinstance(raw, str) else ""
    if not re.fullmatch(r"[0-9]{1,9}", text.strip()):
        shown_raw = text[:20] + ("..." if len(text) > 20 else "") if text else type(raw).__name__
        raise BadRequest(f"{name} must be a whole number from {low} to {high}, got {shown_raw!r}",
                         reason=f"bad_{name}")
    value = int(text)
    if not low <= value <= high:
        raise BadRequest(f"{name} is {value}; give {low} to {high}", reason=f"bad_{name}")
    return value


def _form_text(form: FormData, name: str) -> str | None:
    value = form.get(name)
    if value is not None and not isinstance(value, str):
        raise BadRequest(f"{name} must be a text field, not a file", reason=f"bad_{name}")
    return value


def _read_upload(path: Path, names: dict[str, str]):
    """``read_ecg`` of an uploaded file: every failure a reason-coded refusal naming the upload."""
    from ecg_atlas.embedder import read_ecg

    try:
        return read_ecg(path)
    except Exception as exc:  # whatever a reader raises is the upload's refusal
        refusal = read_refusal(exc)
        if refusal is not exc:  # a failure the reader does not check for: worth the operator's eye
            logger.warning("an uploaded %s file was refused: its reader failed with %s",
                           path.suffix.lower()[:8] or "(no suffix)", type(exc).__name__)
        raise BadRequest(scrub_paths(str(refusal), names), reason=refusal.reason,
                         details=_scrubbed(getattr(refusal, "details", None) or {}, names)) from None


def shown(metadata: dict) -> dict:
    return {k: jsonable(v) for k, v in metadata.items() if k not in HIDDEN_COLUMNS and v is not None}


def _int(request: Request, name: str, default: int, low: int, high: int) -> int:
    return whole_number(request.query_params.get(name), name, default, low, high)


def _flag(value) -> bool:
    return str(value).lower() in ("1", "true", "yes", "on")


def _hits(result) -> list[dict]:
    return [{"ecg_id": h.ecg_id, "score": round(h.score, 5), "patient_id": h.patient_id,
             "metadata": shown(h.metadata)} for h in result.hits]


class AtlasApi:
    """The endpoints, over the clients of one upstream server."""

    def __init__(self, clients: Clients):
        self.clients = clients

    def routes(self) -> list[Route]:
        return [
            Route("/api/info", self.info),
            Route("/api/suggest", self.suggest),
            Route("/api/search", self.search),
            Route("/api/search-file", self.search_file, methods=["POST"]),
            Route("/api/ecg", self.ecg),
            Route("/api/paper", self.paper),
            Route("/api/probes", self.probes),
        ]

    # -- reading ---------------------------------------------------------------------------------
    def info(self, request: Request):
        info = self.clients.for_request(request).info()
        columns = {k: v for k, v in info.get("columns", {}).items() if k not in HIDDEN_COLUMNS}
        return JSONResponse({"ecg_count": int(info.get("ecg_count", 0)), "model_id": info.get("model_id"),
                             "dim": info.get("dim"), "columns": columns, "key_metadata": KEY_METADATA,
                             "encoder_notice": info.get("encoder_notice", "")})

    def suggest(self, request: Request):
        limit = _int(request, "limit", WEB_SUGGESTED_IDS, 1, MAX_SUGGESTED_IDS)
        ids = self.clients.for_request(request).suggest_ids(request.query_params.get("prefix", ""), limit=limit)
        return JSONResponse({"ecg_ids": ids})

    def search(self, request: Request):
        q = request.query_params
        ecg_id = q.get("id", "").strip()
        if not ecg_id:
            raise BadRequest("say which stored ECG to search with: ?id=ECG_ID", reason="no_query")
        k = _int(request, "k", SHOWN_K, 1, WEB_MAX_K)
        client = self.clients.for_request(request)
        started = time.perf_counter()
        result = client.search(ecg_id=ecg_id, k=k, where=q.get("where") or None, exclude_self=True,
                               exclude_same_patient=_flag(q.get("exclude_same_patient")))
        rpc_ms = 1000 * (time.perf_counter() - started)
        return JSONResponse({"query": {"ecg_id": ecg_id}, "hits": _hits(result),
                             "timing": {"search_rpc_ms": round(rpc_ms, 2), **result.timing}})

    async def search_file(self, request: Request):
        from starlette.concurrency import run_in_threadpool

        # the body is capped while it streams (guard.RequestGuard); files spool to disk past 1 MiB
        async with request.form(max_files=16, max_fields=16, max_part_size=64 * 1024) as form:
            uploads = [f for f in form.getlist("files") if isinstance(f, UploadFile)]
            if not uploads:
                raise BadRequest("drop an ECG file (WFDB: its .hea with its .dat/.mat; or HDF5, NumPy, "
                                 "MUSE/Sierra/aECG XML, DICOM, SCP, EDF)", reason="no_file")
            k = whole_number(_form_text(form, "k"), "k", SHOWN_K, 1, WEB_MAX_K)
            where = _form_text(form, "where") or None
            return await run_in_threadpool(self._search_files, request, uploads, k, where)

    def _search_files(self, request: Request, uploads: list[UploadFile], k: int, where: str | None):
        with tempfile.TemporaryDirectory(prefix="ecg-atlas-web-") as folder:
            # what a reader's message may quote -> what the answer says instead
            names = {os.path.join(os.path.realpath(folder), ""): "", os.path.join(folder, ""): ""}
            paths = []
            for upload in uploads:
                name = Path((upload.filename or "upload").replace("\\", "/")).name or "upload"
                safe = re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "upload"
                path = Path(folder) / safe
                upload.file.seek(0)
                with open(path, "wb") as out:
                    shutil.copyfileobj(upload.file, out)
                paths.append(path)
                for spelling in (str(path), os.path.realpath(path)):
                    names[spelling] = name
            headers = [p for p in paths if p.suffix.lower() == ".hea"]
            if not headers and len(paths) > 1:
                raise BadRequest("several files but no WFDB .hea among them: drop one ECG at a time",
                                 reason="ambiguous_upload")
            if headers and len(paths) == 1:
                raise BadRequest(f"{names[str(headers[0])]} is a WFDB header alone: add its .dat (or .mat) "
                                 f"beside it (select or drop both files together)", reason="missing_signal_file")
            target = headers[0] if headers else paths[0]
            try:
                recording = _read_upload(target, names)
            except BadRequest as refusal:
                if target in headers and refusal.reason == "not_found":  # its signal file was not among them
                    raise BadRequest(f"{names[str(target)]} came without the signal file its header names: add "
                                     f"its .dat (or .mat) beside it ({refusal})", reason="missing_signal_file",
                                     details=refusal.details) from None
                raise
        client = self.clients.for_request(request)
        started = time.perf_counter()
        result = client.search(signal=recording.signal, fs=recording.fs, lead_names=list(recording.lead_names),
                               k=k, where=where)
        rpc_ms = 1000 * (time.perf_counter() - started)
        from ecg_atlas.web.traces import paper

        metadata = {k_: v for k_, v in (recording.metadata or {}).items() if k_ in ("age", "sex", "dx")}
        first = names[str(paths[0])]
        return JSONResponse({"query": {"name": first.rsplit(".", 1)[0], "metadata": shown(metadata),
                                       "paper": paper(recording.signal, recording.fs, list(recording.lead_names))},
                             "hits": _hits(result), "timing": {"search_rpc_ms": round(rpc_ms, 2), **result.timing}})

    def ecg(self, request: Request):
        ecg_id = request.query_params.get("id", "")
        found, missing = self.clients.for_request(request).get([ecg_id])
        if missing:
            raise BadRequest(f"ecg_id {ecg_id!r} is not in the store", reason="not_found", status=404,
                             code="NOT_FOUND")
        return JSONResponse({"ecg_id": ecg_id, "patient_id": found[0].patient_id, "metadata": shown(found[0].metadata)})

    def paper(self, request: Request):
        from ecg_atlas.web.traces import paper

        ecg_id = request.query_params.get("id", "")
        recording = self.clients.for_request(request).get_signal(ecg_id)
        return JSONResponse({"ecg_id": ecg_id, **paper(recording.signal, recording.fs, list(recording.lead_names))})

    def probes(self, request: Request):
        from ecg_atlas.web.probe_views import probe_view

        probes = self.clients.for_request(request).list_probes()
        return JSONResponse({"probes": jsonable([probe_view(p) for p in probes])})
