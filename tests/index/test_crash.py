"""kill -9 during bulk adds: the store opens, keeps every acknowledged row, has no orphan entries."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ecg_atlas.index import Store

from .conftest import DIM

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_sigkill_during_bulk_add_loses_no_acknowledged_row(tmp_path):
    path = tmp_path / "store"
    acknowledged: set[str] = set()
    deleted: set[str] = set()
    for round_no, lines_before_kill in enumerate((3, 11, 20, 37)):
        proc = subprocess.Popen([sys.executable, "-m", "tests.index.crash_writer", str(path), str(round_no * 1000)],
                                cwd=REPO, stdout=subprocess.PIPE, text=True,
                                env={**os.environ, "PYTHONPATH": str(REPO)})
        for _ in range(lines_before_kill):
            line = proc.stdout.readline()
            assert line, "the writer died before it was killed"
            if line.startswith("deleted "):
                deleted.add(line.split()[1])
            else:
                acknowledged.update(line.split())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        with Store.open(path) as store:
            info = store.info()
            assert info.n_index_entries == info.n_ecgs
            alive = {i for i in acknowledged if f"p-{i.split('-')[1]}" not in deleted}
            rows = store.get(sorted(alive), columns=["patient_id"])  # raises if any is missing
            assert len(rows) == len(alive)
            # every index entry has its row: a search over everything returns exactly the rows
            hits = store.search(np.ones(DIM, np.float32), k=info.n_ecgs + 10)[0]
            assert len(hits) == info.n_ecgs
            assert not any(h.metadata for h in hits)
            assert not deleted & {r["patient_id"] for r in store.get([h.ecg_id for h in hits], ["patient_id"])}
