"""The `ecg-atlas` verbs end to end: the real command against real servers on loopback and real
stores. Servers and stores come from the service and index tests' helpers."""

from __future__ import annotations

import pytest

from tests.index.conftest import make_rows


@pytest.fixture()
def client(corpus_server):
    """A client of the corpus server (the session fixture in tests/conftest.py)."""
    with corpus_server.client() as c:
        yield c


@pytest.fixture
def rows() -> dict:
    return make_rows()
