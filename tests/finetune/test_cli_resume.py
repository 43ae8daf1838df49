"""`ecg-atlas finetune` killed with SIGKILL after its first checkpoint, then `--resume`: the command
goes on from OUT/checkpoint_last.pt and finishes the run it started (the engine's own test,
tests/finetune/test_resume.py, shows the weights equal an uninterrupted run's)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time

import pytest

from ecg_atlas.embedder import load_encoder
from tests.finetune.ptbxl_subset import write_subset
from tests.service.conftest import CLI, cli

PARTS = {"train": ((1, 2), 24, 8), "val": ((9,), 12, 5)}
EPOCHS = 6


def events(path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.slow
def test_finetune_killed_with_sigkill_resumes_with_resume(tmp_path, tiny_checkpoint):
    data_dir, manifest, _ = write_subset(tmp_path, PARTS)
    out = tmp_path / "run"
    args = [str(data_dir), "--manifest", str(manifest), "--target", "MI", "--train", "strat_fold <= 2",
            "--val", "strat_fold = 9", "--checkpoint", str(tiny_checkpoint), "--out", str(out),
            "--epochs", str(EPOCHS), "--patience", str(EPOCHS), "--batch-size", "16", "--min-positives", "3",
            "--bootstrap", "50", "--device", "cpu", "--seed", "3"]
    first = subprocess.Popen([str(CLI), "finetune", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # bounded wait on a condition: the first checkpoint event, then SIGKILL (no chance to clean up)
        give_up = time.monotonic() + 300
        while not any(e["event"] == "checkpoint" for e in events(out / "events.jsonl")):
            assert first.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < give_up, "no checkpoint within 300 s"
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGKILL)
    finally:
        first.wait(timeout=60)
    assert first.returncode == -signal.SIGKILL
    killed_at = [e for e in events(out / "events.jsonl") if e["event"] == "checkpoint"][-1]["update"]
    assert killed_at > 0 and not (out / "model.pt").exists() and (out / "checkpoint_last.pt").exists()

    # without --resume the command refuses to start over silently ...
    again = cli("finetune", *args, check=False)
    assert again.returncode != 0 and "--resume" in again.stderr
    # ... with it, the run goes on from the checkpoint and ends as planned
    done = cli("finetune", *args, "--resume", "--json")
    summary = json.loads(done.stdout)
    report = json.loads((out / "report.json").read_text())
    assert report["run"]["resumed"] is True
    assert report["training"]["epochs_run"] == EPOCHS and report["training"]["stopped"] == "epochs"
    resumed = [e for e in events(out / "events.jsonl") if e["event"] == "start"][-1]
    assert resumed["update"] == killed_at  # the second attempt started where the checkpoint left off
    assert load_encoder(out / "model.pt").checkpoint_sha256 == report["model_sha256"] == summary["model_sha256"]
