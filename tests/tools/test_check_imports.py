"""tools/check_imports.py: the product modules import one another without circles, in layers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "check_imports.py"


def check(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), str(root)], capture_output=True, text=True, timeout=120)


def test_the_tree_has_no_import_circle_and_keeps_its_layers():
    done = check(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "no circles, layering holds" in done.stdout


def write_tree(root: Path, files: dict[str, str]) -> Path:
    (root / "pyproject.toml").write_text('[tool.setuptools.package-dir]\n"ecg_atlas" = "ecg_atlas"\n'
                                         '"ecg_atlas.embedder" = "embedder"\n"ecg_atlas.index" = "index"\n'
                                         '"ecg_atlas.analysis" = "analysis"\n')
    for name, text in {"ecg_atlas/__init__.py": "", "embedder/__init__.py": "", "index/__init__.py": "",
                       "analysis/__init__.py": "", **files}.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_a_circle_hidden_in_function_level_imports_is_found(tmp_path):
    root = write_tree(tmp_path, {
        "embedder/a.py": "from .b import thing\n",
        "embedder/b.py": "def thing():\n    from ecg_atlas.embedder import c\n    return c\n",
        "embedder/c.py": "def other():\n    from . import a\n    return a\n",
        "embedder/d.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .a import x\n",
    })
    done = check(root)
    assert done.returncode == 1
    assert ("import circle among 3 modules: ecg_atlas.embedder.a, ecg_atlas.embedder.b, ecg_atlas.embedder.c"
            in done.stdout)
    assert "ecg_atlas.embedder.c -> ecg_atlas.embedder.a  (embedder/c.py:2)" in done.stdout
    assert "embedder.d" not in done.stdout  # imports under TYPE_CHECKING never run


def test_lazy_exports_of_a_package_count_as_its_imports(tmp_path):
    root = write_tree(tmp_path, {
        "embedder/__init__.py": ('import importlib\n_EXPORTS = {"load": "loader"}\n'
                                 'def __getattr__(name):\n'
                                 '    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)\n'),
        "embedder/loader.py": "def load():\n    from ecg_atlas.embedder import helper\n",
    })
    done = check(root)
    assert done.returncode == 1
    assert "ecg_atlas.embedder -> ecg_atlas.embedder.loader  (embedder/__init__.py:2)" in done.stdout


def test_layering_embedder_and_index_apart_analysis_above(tmp_path):
    root = write_tree(tmp_path, {
        "embedder/e.py": "def f():\n    from ecg_atlas.index.store import Store\n",
        "index/store.py": "Store = object\n",
        "index/i.py": "import ecg_atlas.analysis.probe\n",
        "analysis/probe.py": "from ecg_atlas.embedder import e\nfrom ecg_atlas.index import store\n",
    })
    done = check(root)
    assert done.returncode == 1
    assert "layering: ecg_atlas.embedder.e imports ecg_atlas.index.store (embedder/e.py:2)" in done.stdout
    assert "layering: ecg_atlas.index.i imports ecg_atlas.analysis.probe (index/i.py:1)" in done.stdout
    assert "analysis.probe imports" not in done.stdout  # analysis may import both
    assert "0 import circle(s), 2 layering violation(s)" in done.stdout
