"""A test that needs the shared data and cannot find it must fail and say where it looked."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO_ROOT, shared_data_dir


def test_default_location_is_beside_the_repo(monkeypatch):
    monkeypatch.delenv("ECG_ATLAS_SHARED_DATA", raising=False)
    assert shared_data_dir() == REPO_ROOT.parent / "shared" / "data"


def test_environment_variable_overrides(monkeypatch, tmp_path):
    monkeypatch.setenv("ECG_ATLAS_SHARED_DATA", str(tmp_path))
    assert shared_data_dir() == tmp_path


def test_missing_data_fails_loudly_naming_the_place(tmp_path):
    probe = tmp_path / "test_probe.py"
    probe.write_text(textwrap.dedent("""
        def test_needs_data(ecg_dir):
            assert ecg_dir.exists()
    """))
    conftest = (REPO_ROOT / "tests" / "conftest.py").read_text()
    (tmp_path / "conftest.py").write_text(conftest)
    missing = tmp_path / "nowhere"
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(probe)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
        env={"ECG_ATLAS_SHARED_DATA": str(missing), "PATH": "/usr/bin:/bin"},
    )
    assert out.returncode == 1, out.stdout + out.stderr  # failed, not skipped
    assert f"shared test data not found at {missing}" in out.stdout
    assert "1 failed" in out.stdout or "1 error" in out.stdout
