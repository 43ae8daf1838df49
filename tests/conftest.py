"""Shared fixtures: where the real ECGs and the parity files live.

The shared data sits at ../shared/data beside the repo (CI always has it); ECG_ATLAS_SHARED_DATA
overrides that. A test that needs it and cannot find it fails and says where it looked: nothing is
skipped silently.
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
