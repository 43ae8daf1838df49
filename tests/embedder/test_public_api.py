"""The entry points other parts and users rely on keep their names and meanings."""

from __future__ import annotations

import importlib
import inspect
import pkgutil

import ecg_atlas.embedder as embedder


def test_public_names_are_the_functions_even_after_every_submodule_is_imported():
    for info in pkgutil.walk_packages(embedder.__path__, embedder.__name__ + "."):
        importlib.import_module(info.name)
    from ecg_atlas.embedder import load_encoder, prepare, preprocess, read_ecg

    for fn in (load_encoder, prepare, preprocess, read_ecg):
        assert inspect.isfunction(fn), fn
    for name in embedder.__all__:
        assert not inspect.ismodule(getattr(embedder, name)), name


def test_reading_ecgs_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys; from ecg_atlas.embedder import read_ecg, preprocess; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_the_ingest_client_does_not_import_torch():
    # The client side of ingest reads, prefetches and streams files; loading torch there cost
    # 1.3 s of start-up and CPU that the server's encoder on the same machine could use.
    import subprocess
    import sys

    code = ("import sys, tempfile\n"
            "from ecg_atlas.ingest.stream import ingest_files\n"
            "from ecg_atlas.errors import AtlasError\n"
            "try:\n    ingest_files(None, [tempfile.mkdtemp()])  # imports what it streams with, then finds no ECG\n"
            "except AtlasError:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
