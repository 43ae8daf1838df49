"""The web atlas: search with 12-lead traces, cohort maps and probes in the browser, as a client of
the gRPC service (``ecg-atlas web --server HOST:PORT``). ``create_app`` builds the ASGI app."""

from .api import Upstream
from .app import create_app

__all__ = ["Upstream", "create_app"]
