"""benchmarks/gpu.py cannot rot: its dry run goes through every step on the CPU
(its speed is not a test: BENCHMARKS.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_benchmark_dry_run_runs_every_step_on_the_cpu(tmp_path, shared_data):
    out = tmp_path / "gpu.jsonl"
    done = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu.py"), "--dry-run", "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert not [r for r in rows if "error" in r]
    figures = {r["step"] for r in rows if r.get("what") not in ("peak_memory", "step_seconds")}
    assert {"setup", "accuracy", "dispatch", "throughput", "ingest", "ingest_processes", "search",
            "pretrain"} <= figures
    pool = next(r for r in rows if r["step"] == "ingest_processes" and "processes_ratio" in r)
    assert pool["preprocess_processes"] >= 1 and pool["ecgs"] > 0  # threads vs processes, same ECGs
    assert pool["bare_ecgs_per_s"] > 0 and pool["threads_ratio"] > 0 and pool["processes_ratio"] > 0
    accuracy = [r for r in rows if r["step"] == "accuracy" and "dtype" in r]
    assert {r["dtype"] for r in accuracy} == {"float32", "bfloat16"}
    assert all(r["output_dtype"] == "float32" and r["cosine_min"] >= 0.9999 for r in accuracy)
    assert {r["compiled"] for r in rows if r["step"] == "throughput" and "segments_per_s" in r} == {False, True}
    assert all(r["peak_mb"] > 0 for r in rows if r.get("what") == "peak_memory")
    assert rows[-1] == {**rows[-1], "step": "done", "failed_steps": 0}
