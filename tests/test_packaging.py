"""A non-editable install carries every package: each folder with an ``__init__.py`` under the
folders pyproject.toml maps into ``ecg_atlas`` is listed in ``[tool.setuptools] packages``
(setuptools installs only those listed; an editable install hides a missing one)."""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_package_folder_is_listed_and_every_listed_package_exists():
    settings = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed, folders = set(settings["packages"]), settings["package-dir"]
    on_disk = {}  # dotted name -> folder
    for name, folder in folders.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            on_disk[".".join((name, *init.parent.relative_to(ROOT / folder).parts))] = init.parent
    assert sorted(set(on_disk) - listed) == [], "add these to [tool.setuptools] packages"
    for name in listed:  # a listed folder without __init__.py (package data) must still exist
        owner = max((m for m in folders if name == m or name.startswith(m + ".")), key=len)
        below = name[len(owner) + 1:].split(".") if name != owner else []
        assert (ROOT / folders[owner]).joinpath(*below).is_dir(), f"{name} is listed but has no folder"
