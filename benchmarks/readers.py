"""Reader benchmark: milliseconds to read each hospital export into a float32 mV ``Recording``,
beside the WFDB direct reader measured in the same run.

    python benchmarks/readers.py [--rounds 200] [--json]

Every real file of ../shared/data/formats (the non-conformant SCP file is refused and timed as
such) and the WFDB record cinc_ptbxl/HR00001 (10 s, 500 Hz, 12 leads) are read in interleaved
rounds, so background load hits every format alike; each time includes ``rec.signal`` (the WFDB
reader keeps int16 samples until the signal is asked for). Figures are medians over the rounds,
per file and per 10 s of ECG (files longer than 10 s are scaled down), after one warm-up read of
each file (imports, numba's cached decoders): wall-clock time, and the process's CPU time, which
other jobs on a shared machine do not inflate (a read preempted by them waits a time slice, a few
ms, and its wall time shows it). Goal: every format <= 5 ms per 10-s ECG.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

from ecg_atlas.embedder.readers import read_ecg
from ecg_atlas.errors import InvalidECGError

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ECG_ATLAS_SHARED_DATA", REPO.parent / "shared" / "data"))

WFDB_RECORD = "cinc_ptbxl/HR00001"
GOAL_MS = 5.0


def _read(path: Path) -> float:
    """Seconds of ECG read (0 for a refused file)."""
    try:
        rec = read_ecg(path)
    except InvalidECGError:
        return 0.0
    _ = rec.signal  # materialise the float32 signal for every reader alike
    return rec.duration_s


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    data = SHARED
    with open(data / "formats" / "manifest.csv", newline="") as f:
        files = [(row["format"], data / "formats" / row["path"]) for row in csv.DictReader(f)]
    files.append(("wfdb (direct reader)", data / "ecg" / WFDB_RECORD))
    durations = {path: _read(path) for _, path in files}  # warm-up
    times: dict[Path, list[float]] = {path: [] for _, path in files}
    cpu_times: dict[Path, list[float]] = {path: [] for _, path in files}
    for _ in range(args.rounds):
        for _, path in files:
            started, cpu_started = time.perf_counter(), time.process_time()
            _read(path)
            times[path].append(time.perf_counter() - started)
            cpu_times[path].append(time.process_time() - cpu_started)

    rows = []
    for kind, path in files:
        ms = statistics.median(times[path]) * 1e3
        cpu_ms = statistics.median(cpu_times[path]) * 1e3
        seconds = durations[path]
        per_10s = 10 / seconds if seconds > 10 else 1.0
        rows.append({"format": kind, "file": path.name, "ecg_s": round(seconds, 3), "ms_per_file": round(ms, 3),
                     "ms_per_10s": round(ms * per_10s, 3), "cpu_ms_per_10s": round(cpu_ms * per_10s, 3),
                     "refused": seconds == 0})
    wfdb_ms = rows[-1]["ms_per_10s"]
    for row in rows:
        row["vs_wfdb"] = round(row["ms_per_10s"] / wfdb_ms, 2)
    per_format: dict[str, float] = {}
    for row in rows[:-1]:
        if not row["refused"]:
            per_format[row["format"]] = max(per_format.get(row["format"], 0), row["ms_per_10s"])
    summary = {
        "utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "python": platform.python_version(),
        "rounds": args.rounds, "load_average_1min": round(os.getloadavg()[0], 2), "wfdb_direct_ms_per_10s": wfdb_ms,
        "worst_file_ms_per_10s_by_format": per_format,
        "goal_met": all(v <= GOAL_MS for v in per_format.values()), "files": rows,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return 0
    print(f"{summary['utc']}, {args.rounds} interleaved rounds, medians, load average "
          f"{summary['load_average_1min']} at the end")
    print(f"{'format':<22} {'file':<48} {'ECG s':>7} {'ms/file':>8} {'ms/10 s':>8} {'CPU ms/10 s':>12} {'x WFDB':>7}")
    for row in rows:
        note = "  (refused)" if row["refused"] else ""
        print(f"{row['format']:<22} {row['file']:<48} {row['ecg_s']:>7.2f} {row['ms_per_file']:>8.2f} "
              f"{row['ms_per_10s']:>8.2f} {row['cpu_ms_per_10s']:>12.2f} {row['vs_wfdb']:>7.2f}{note}")
    print("worst file per format, ms per 10-s ECG:",
          ", ".join(f"{k} {v:.2f}" for k, v in per_format.items()), f"(goal <= {GOAL_MS} ms:",
          "met)" if summary["goal_met"] else "NOT met)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
