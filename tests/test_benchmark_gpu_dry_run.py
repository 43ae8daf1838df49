"""benchmarks/gpu.py cannot rot: its dry run goes through every step on the CPU, fast."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def test_gpu_benchmark_dry_run_runs_every_step_on_the_cpu(tmp_path, shared_data):
    out = tmp_path / "gpu.jsonl"
    started = time.monotonic()
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    elapsed = time.monotonic() - started
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert not [r for r in rows if "error" in r]
    figures = {r["step"] for r in rows if r.get("what") not in ("peak_memory", "step_seconds")}
    assert {"setup", "accuracy", "dispatch", "throughput", "ingest", "search", "pretrain"} <= figures
    accuracy = [r for r in rows if r["step"] == "accuracy" and "dtype" in r]
    assert {r["dtype"] for r in accuracy} == {"float32", "bfloat16"}
    assert all(r["output_dtype"] == "float32" and r["cosine_min"] >= 0.9999 for r in accuracy)
    assert {r["compiled"] for r in rows if r["step"] == "throughput" and "segments_per_s" in r} == {False, True}
    assert all(r["peak_mb"] > 0 for r in rows if r.get("what") == "peak_memory")
    assert rows[-1] == {**rows[-1], "step": "done", "failed_steps": 0}
    assert elapsed < 30, f"the dry run took {elapsed:.1f} s; CI gives it 30"
