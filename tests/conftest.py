"""Shared fixtures: where the real ECGs and the parity files live.

The shared data sits at ../shared/data beside the repo (CI always has it); ECG_ATLAS_SHARED_DATA
overrides that. A test that needs it and cannot find it fails and says where it looked: nothing is
skipped silently.

The ``slow`` marker: a test that starts a real server, a Ray cluster or Chromium, or reads the
whole corpus, carries it (``make test-fast`` runs the others). A test using one of the shared
fixtures that do so without the marker is a collection error naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    env = os.environ.get("ECG_ATLAS_SHARED_DATA")
    return Path(env) if env else (REPO_ROOT.parent / "shared" / "data")


def _require(path: Path) -> Path:
    if not path.exists():
        pytest.fail(
            f"shared test data not found at {path} (set ECG_ATLAS_SHARED_DATA to the folder that "
            f"holds ecg/ and parity/; default is ../shared/data from the repo root)",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return _require(shared_data_dir())


@pytest.fixture(scope="session")
def parity_dir(shared_data: Path) -> Path:
    return _require(shared_data / "parity")


@pytest.fixture(scope="session")
def ecg_dir(shared_data: Path) -> Path:
    return _require(shared_data / "ecg")


@pytest.fixture(scope="session")
def tiny_checkpoint(parity_dir: Path) -> Path:
    """The tiny real ECG-FM checkpoint of the parity files: fast, and the real loading path."""
    return parity_dir / "tiny_pretrained.pt"


@pytest.fixture(scope="session")
def corpus_server(tmp_path_factory, tiny_checkpoint, ecg_dir):
    """A real `ecg-atlas serve` whose store holds every usable sample ECG, with the manifest as
    metadata, ingested once by `ecg-atlas ingest` (tests/service, tests/bulk)."""
    # imported here: this file also runs on its own, outside the repo (tests/test_shared_data.py)
    from tests.service.conftest import WRITE_TOKEN, cli_json, start_server

    root = tmp_path_factory.mktemp("corpus")
    server = start_server(root / "store", tiny_checkpoint, root / "logs")
    ingest = cli_json("ingest", str(ecg_dir), "--metadata", str(ecg_dir / "manifest.csv"), "--id-column", "record",
                      "--server", server.address, "--token", WRITE_TOKEN)
    server.ingest = ingest
    yield server
    server.stop()


#: Shared fixtures whose set-up makes a test slow: a real server holding the whole corpus
#: (tests/service, tests/web), Chromium, a Ray cluster and its shards of the corpus (tests/bulk),
#: the whole corpus embedded in process (tests/analysis).
SLOW_FIXTURES = frozenset({"corpus_server", "atlas_server", "browser", "ray_cluster", "corpus_shards", "corpus",
                           "store_dir"})


def pytest_collection_modifyitems(config, items):
    unmarked = [f"{item.nodeid} (uses {', '.join(sorted(SLOW_FIXTURES.intersection(item.fixturenames)))})"
                for item in items
                if SLOW_FIXTURES.intersection(item.fixturenames) and item.get_closest_marker("slow") is None]
    if unmarked:
        raise pytest.UsageError("these tests use a slow fixture but are not marked @pytest.mark.slow:\n  "
                                + "\n  ".join(unmarked))
