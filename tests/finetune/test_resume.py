"""Resuming a fine-tuning run after kill -9: a run in its own process is killed (SIGKILL) one
update after a mid-epoch checkpoint; ``resume=True`` continues from checkpoint_last.pt (the
position in the epoch, the optimizer, every random generator) and ends with the weights of a run
that was never interrupted."""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time

import pytest
import torch

from ecg_atlas.finetune.checkpoint import LAST
from tests.conftest import REPO_ROOT
from tests.finetune import engine_entry

#: seconds a run in its own process may take to reach the hold point (imports, reading the records)
WAIT_S = 600


def _entry(out, *args) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tests.finetune.engine_entry", str(out), *args], cwd=REPO_ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})


def _lines_until(proc: subprocess.Popen, marker: str) -> list[str]:
    """stdout lines up to ``marker``, read with a bounded wait (a reader thread feeds a queue)."""
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line.strip()) for line in proc.stdout] + [lines.put(None)],
                     daemon=True).start()
    seen, deadline = [], time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
        except queue.Empty:
            break
        if line is None:
            break
        seen.append(line)
        if line == marker:
            return seen
    proc.kill()
    pytest.fail(f"the run never printed {marker}; stderr: {proc.stderr.read()[-2000:]}")


@pytest.mark.slow
def test_kill_9_then_resume_ends_with_the_uninterrupted_weights(tmp_path):
    # The reference run, never interrupted, in this process (one thread, as the entry script runs).
    threads = torch.get_num_threads()
    try:
        engine_entry.run(tmp_path / "whole")
    finally:
        torch.set_num_threads(threads)
    reference = torch.load(tmp_path / "whole" / "result.pt", weights_only=True)

    out = tmp_path / "killed"
    proc = _entry(out, "--hold-at", "7")
    events = [json.loads(line) for line in _lines_until(proc, "HOLD")[:-1]]
    proc.kill()  # SIGKILL: no handler, no cleanup
    proc.wait(timeout=60)
    assert proc.returncode == -9
    saved = [e["update"] for e in events if e["event"] == "checkpoint"]
    assert saved == [3, 4, 6] and events[-1] == {**events[-1], "event": "step", "update": 7}
    state = torch.load(out / LAST, weights_only=True)
    assert (state["progress"]["epoch"], state["progress"]["step"], state["progress"]["updates"]) == (1, 2, 6)

    resumed = _entry(out, "--resume")
    stdout, stderr = resumed.communicate(timeout=WAIT_S)
    assert resumed.returncode == 0, stderr[-2000:]
    events = [json.loads(line) for line in stdout.splitlines()]
    assert events[0]["event"] == "start" and events[0]["resumed"] is True and events[0]["update"] == 6
    assert [e["update"] for e in events if e["event"] == "step"] == list(range(7, 13))
    result = torch.load(out / "result.pt", weights_only=True)
    for part in ("network", "head"):
        for key, value in reference[part].items():
            assert float((result[part][key] - value).abs().max()) <= 1e-6, f"{part}.{key}"
    assert [r["val_macro_auroc"] for r in result["history"]] == [r["val_macro_auroc"] for r in reference["history"]]
    moved = torch.load(out / LAST, weights_only=True)["network"]
    assert max(float((moved[k] - state["network"][k]).abs().max()) for k in moved) > 1e-4  # it trained on
