"""Which requests the atlas serves at all: a Host it answers to, a same-origin JSON write, a body
within its cap. An ASGI middleware in front of every route.

* **Host** (every request, reads too): the name the browser used must be on the allowed list, so a
  page on a name the attacker controls that resolves to this machine (DNS rebinding) gets nothing.
  The list holds the bound address with its port (and, bound to loopback or to every address, the
  usual ``localhost`` / ``127.0.0.1`` / ``[::1]`` spellings of it); ``ecg-atlas web
  --allowed-host NAME`` adds names (``NAME`` any port, ``NAME:PORT`` that port).
* **Writes** (any method but GET/HEAD/OPTIONS): an ``Origin`` equal to the page's own
  (``scheme://Host``), and a ``Content-Type`` of ``application/json`` (``multipart/form-data``
  for the file upload). A cross-site page can send a ``text/plain`` POST without asking first;
  it cannot make it carry this origin.
* **Body size**: a declared ``Content-Length`` above the cap is refused before reading, and a body
  without one (chunked) is counted while it streams in and refused once past the cap, never
  buffered whole first.

Refusals are ``403`` (``bad_host``, ``bad_origin``, ``bad_content_type``) or ``413``
(``too_large``), JSON like every other error.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from starlette.responses import JSONResponse

from ecg_atlas.service.config import LOOPBACK_HOSTS

from .api import MAX_JSON_BYTES, MAX_UPLOAD_BYTES, BadRequest

logger = logging.getLogger("ecg_atlas.web.guard")

SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}
#: routes whose body is a form with files; every other write takes JSON
FORM_ROUTES = {"/api/search-file"}
WILDCARD_HOSTS = ("0.0.0.0", "::", "")
DEFAULT_PORTS = {"http": 80, "https": 443}


def default_allowed_hosts(bound_host: str, port: int) -> list[str]:
    """The names a browser may use for a listener on ``bound_host:port``."""
    names = [bound_host]
    if bound_host in LOOPBACK_HOSTS or bound_host in WILDCARD_HOSTS:
        names += LOOPBACK_HOSTS
    if bound_host in WILDCARD_HOSTS:
        names += [socket.gethostname(), socket.getfqdn()]
    return list(dict.fromkeys(f"{_bracketed(n)}:{port}" for n in names if n not in WILDCARD_HOSTS))


def _bracketed(name: str) -> str:
    return f"[{name}]" if ":" in name and not name.startswith("[") else name


def split_host(value: str) -> tuple[str, int | None]:
    """``("name", port)`` of a Host header or allow-list entry (port None when it names none)."""
    value = value.strip().lower()
    if value.startswith("["):
        name, _, rest = value[1:].partition("]")
        port = rest[1:] if rest.startswith(":") else ""
    else:
        name, _, port = value.partition(":") if value.count(":") == 1 else (value, "", "")
    if port and not (port.isascii() and port.isdigit() and len(port) <= 5):
        return "", None  # not a host at all: matches nothing
    return name.rstrip("."), int(port) if port else None


class HostList:
    """The allowed ``Host`` names; an entry without a port allows that name on any port."""

    def __init__(self, entries: Iterable[str]):
        self.entries = [split_host(e) for e in entries if e and e.strip()]
        if not self.entries:
            raise ValueError("the web atlas needs at least one allowed host name")

    def allows(self, name: str, port: int) -> bool:
        return bool(name) and any(name == n and (p is None or p == port) for n, p in self.entries)


def _refusal(status: int, reason: str, message: str, code: str = "PERMISSION_DENIED") -> JSONResponse:
    return JSONResponse({"error": message, "code": code, "reason": reason, "details": {}}, status_code=status)


class RequestGuard:
    """ASGI middleware: Host allow-list, same-origin JSON writes and body caps (module docstring)."""

    def __init__(self, app, allowed_hosts: Iterable[str]):
        self.app = app
        self.hosts = HostList(allowed_hosts)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {}
        for key, value in scope["headers"]:  # a repeated header is refused, never guessed between
            key = key.decode("latin-1").lower()
            headers[key] = None if key in headers else value.decode("latin-1")
        refused = self.check(scope, headers)
        if refused is not None:
            return await refused(scope, receive, send)
        return await self.app(scope, self.capped(scope["path"], receive), send)

    def check(self, scope, headers: dict) -> JSONResponse | None:
        scheme = scope.get("scheme", "http")
        host = headers.get("host")
        name, port = split_host(host or "")
        port = port or DEFAULT_PORTS.get(scheme, 0)
        if not host or not self.hosts.allows(name, port):
            logger.debug("refused Host %r", host)
            return _refusal(403, "bad_host", "this web atlas does not answer to that host name (DNS rebinding "
                                             "guard); use the address it printed, or start it with "
                                             "--allowed-host NAME")
        method, path = scope["method"].upper(), scope["path"]
        if method in SAFE_METHODS:
            return None
        origin = headers.get("origin")
        if not self._same_origin(origin, scheme, name, port):
            logger.debug("refused Origin %r for Host %r", origin, host)
            return _refusal(403, "bad_origin", "a write must come from the atlas's own page: the request's Origin "
                                               "is missing or another site's")
        wanted = "multipart/form-data" if path in FORM_ROUTES else "application/json"
        media_type = (headers.get("content-type") or "").partition(";")[0].strip().lower()
        if media_type != wanted:
            return _refusal(403, "bad_content_type", f"send the body as {wanted}")
        length = headers.get("content-length")
        limit = self.limit(path)
        if length is not None and not (length.isascii() and length.isdigit()):
            return _refusal(400, "bad_request", "the Content-Length header is not a number", code="INVALID_ARGUMENT")
        if length is not None and int(length) > limit:
            return _refusal(413, "too_large", _too_large(limit), code="RESOURCE_EXHAUSTED")
        return None

    @staticmethod
    def _same_origin(origin: str | None, scheme: str, name: str, port: int) -> bool:
        if not origin or origin == "null":
            return False
        try:
            parts = urlsplit(origin)
            origin_port = parts.port or DEFAULT_PORTS.get(parts.scheme)
        except ValueError:
            return False
        return (parts.scheme == scheme and not parts.path.strip("/") and (parts.hostname or "") == name
                and origin_port == port)

    @staticmethod
    def limit(path: str) -> int:
        return MAX_UPLOAD_BYTES if path in FORM_ROUTES else MAX_JSON_BYTES

    def capped(self, path: str, receive):
        """``receive`` that counts the body as it streams and refuses it once past the cap."""
        limit, seen = self.limit(path), 0

        async def receiving():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BadRequest(_too_large(limit), reason="too_large", status=413, code="RESOURCE_EXHAUSTED")
            return message

        return receiving


def _too_large(limit: int) -> str:
    return f"the request body is over the limit of {limit / 2**20:g} MiB"
