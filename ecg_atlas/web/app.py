"""The web atlas as an ASGI app: static pages and scripts, the JSON API, and what every answer carries.

* Security headers on every response: a CSP that allows scripts from this origin only (no inline
  scripts anywhere; eval for plotly's WebGL code generation, see CSP; styles may be set inline
  because plotly.js positions its elements that way),
  no framing, no sniffing, no referrer. ECG data (everything under /api/) is ``no-store``.
* Access log: method, path, status and time at INFO. Query strings (where ecg ids and filters
  travel) appear only at DEBUG; uvicorn's own access log is off.
* Every error is JSON ``{"error", "code", "reason", "details"}`` with the same headers: refusals
  of the guard (``guard.RequestGuard``: Host, Origin, content type, body size), Starlette's own
  404/405/400s, and any unexpected exception (a 500 ``internal_error``; the log says its type at
  ERROR, the traceback only at DEBUG, so no path or id is written above DEBUG).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable
from pathlib import Path

import grpc
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from ecg_atlas.errors import AtlasError

from .api import AtlasApi, Clients, Upstream, error_response
from .guard import RequestGuard
from .map_api import MapApi

STATIC = Path(__file__).parent / "static"
access_log = logging.getLogger("ecg_atlas.web.access")
logger = logging.getLogger("ecg_atlas.web")

# 'unsafe-eval' and nothing looser: plotly.js's WebGL traces (regl) build their draw calls with
# Function(...) at run time (without it the map says "WebGL is not supported"); inline scripts stay
# forbidden. The plotly wheel ships no strict (eval-free) bundle.
CSP = ("default-src 'self'; script-src 'self' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; "
       "connect-src 'self'; worker-src 'self' blob:; object-src 'none'; base-uri 'none'; "
       "frame-ancestors 'none'; form-action 'self'")
SECURITY_HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
]


def plotly_js() -> Path:
    """plotly.min.js as the installed plotly wheel ships it."""
    import plotly

    path = Path(plotly.__file__).parent / "package_data" / "plotly.min.js"
    if not path.is_file():
        raise AtlasError(f"plotly.min.js is not in the installed plotly package ({path}); reinstall plotly")
    return path


#: Starlette's own HTTP errors (unknown route, wrong method, a malformed form) as gRPC-style codes
_HTTP_ERRORS = {400: ("INVALID_ARGUMENT", "bad_request"), 404: ("NOT_FOUND", "not_found"),
                405: ("UNIMPLEMENTED", "method_not_allowed"), 413: ("RESOURCE_EXHAUSTED", "too_large")}


def internal_error() -> JSONResponse:
    return JSONResponse({"error": "the web atlas failed on this request (its log says why); try again or report it",
                         "code": "INTERNAL", "reason": "internal_error", "details": {}}, status_code=500)


class HeadersAndAccessLog:
    """ASGI middleware: security and caching headers, an access log without ids, and a JSON 500
    for whatever else fails."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        path = scope["path"]
        status = {}
        if path.startswith("/api/"):
            caching = b"no-store"
        elif path.startswith("/vendor/"):
            caching = b"public, max-age=86400"
        else:
            caching = b"no-cache"

        async def sending(message):
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"cache-control"]
                message["headers"] = headers + SECURITY_HEADERS + [(b"cache-control", caching)]
                if caching == b"no-store":
                    message["headers"].append((b"pragma", b"no-cache"))
            await send(message)

        try:
            await self.app(scope, receive, sending)
        except Exception as exc:  # the catch-all: a JSON 500 with every header
            logger.error("%s %s failed with %s (run with -vv for the traceback)", scope["method"], path,
                         type(exc).__name__)
            logger.debug("the traceback", exc_info=True)
            if "code" not in status:
                await internal_error()(scope, receive, sending)
        finally:
            ms = 1000 * (time.perf_counter() - started)
            access_log.info("%s %s %s %.0f ms", scope["method"], path, status.get("code", "-"), ms)
            if access_log.isEnabledFor(logging.DEBUG) and scope.get("query_string"):
                access_log.debug("%s %s?%s", scope["method"], path, scope["query_string"].decode("latin-1"))


def create_app(upstream: Upstream, *, allowed_hosts: Iterable[str]) -> Starlette:
    """The atlas for `upstream`, answering to the ``Host`` names in `allowed_hosts` (``NAME`` or
    ``NAME:PORT``; see ``guard.default_allowed_hosts`` for a listener's own)."""
    clients = Clients(upstream)
    api = AtlasApi(clients)
    map_api = MapApi(clients)

    def index(request: Request):
        return FileResponse(STATIC / "index.html", media_type="text/html")

    def health(request: Request):
        return JSONResponse({"status": "ok"})

    async def handle(request: Request, exc: Exception):
        return error_response(exc)

    async def http_error(request: Request, exc: HTTPException):
        code, reason = _HTTP_ERRORS.get(exc.status_code, ("INVALID_ARGUMENT", "bad_request"))
        return JSONResponse({"error": str(exc.detail), "code": code, "reason": reason, "details": {}},
                            status_code=exc.status_code, headers=exc.headers)

    routes = [Route("/", index), Route("/healthz", health), *api.routes(), *map_api.routes(),
              Route("/vendor/plotly.min.js", lambda request: FileResponse(plotly_js(), media_type="text/javascript")),
              Mount("/static", StaticFiles(directory=STATIC), name="static")]
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        clients.close()

    app = Starlette(routes=routes, exception_handlers={grpc.RpcError: handle, AtlasError: handle,
                                                       HTTPException: http_error}, lifespan=lifespan)
    app.add_middleware(RequestGuard, allowed_hosts=list(allowed_hosts))
    app.add_middleware(HeadersAndAccessLog)  # added last: outermost, so refusals get the headers too
    return app
