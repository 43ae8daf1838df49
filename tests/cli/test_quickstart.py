"""The quickstart's closing line names a command that runs as printed (issue 28: it said `ecg-atlas`,
which is not on PATH after `make quickstart`)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from ecg_atlas.cli.quickstart import command_name
from tests.conftest import REPO_ROOT


def test_off_path_it_names_the_script_beside_the_interpreter(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing called ecg-atlas on it
    monkeypatch.chdir(REPO_ROOT)
    name = command_name()
    script = Path(sys.executable).parent / "ecg-atlas"
    assert Path(name) == Path(os.path.relpath(script))
    assert script.exists(), "the venv running the tests has the ecg-atlas script"
    if Path(sys.executable).parent.parent == REPO_ROOT / ".venv":  # `make` runs the suite from .venv
        assert name == ".venv/bin/ecg-atlas"


def test_on_path_it_is_the_bare_name(monkeypatch):
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    assert command_name() == "ecg-atlas"
