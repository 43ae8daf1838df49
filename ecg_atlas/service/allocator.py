"""glibc allocator settings for a long-running server process, set up in one place.

``tune_malloc()`` runs once per process, when the first ``AtlasServer`` starts (``serve`` and
``quickstart`` alike). BENCHMARKS.md (Service) shows what it pays: flat resident memory under 32
clients and 2.5x fewer page faults (ingest +3-4 %).
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
import time

_applied: dict[str, bool] | None = None
_once = threading.Lock()


#: glibc's mallopt parameters (malloc.h).
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8
#: Blocks below this come from the arenas, not from a fresh mmap each time (glibc's ceiling).
MMAP_THRESHOLD_BYTES = 32 * 2**20
#: free() hands the top of a heap back to the kernel only beyond this; the trim thread does the rest.
TRIM_THRESHOLD_BYTES = 256 * 2**20


def tune_malloc(arenas: int = 2, trim_every_s: float = 5.0) -> dict[str, bool]:
    """Keep a long-running, many-threaded server's resident memory flat under load, without
    paying page faults for every large array (glibc only).

    * ``M_ARENA_MAX``: dozens of gRPC threads each allocating ECG-sized buffers made glibc's default
      (8 arenas per core) let resident memory climb under load (BENCHMARKS.md, Service).
    * a daemon thread calls ``malloc_trim(0)`` every ``trim_every_s``: batches of changing size leave
      free holes inside the heaps that glibc keeps resident; trimming hands those pages back. (Forcing
      large blocks to mmap instead also flattened memory, but cost 15–30 % of throughput.)
    * fixed ``M_MMAP_THRESHOLD`` (32 MiB) and ``M_TRIM_THRESHOLD`` (256 MiB): with glibc's sliding
      defaults, the encoder's activations and the ECG-sized arrays of preprocessing were mapped,
      freed and faulted in again op after op: 200–250 k page faults and ~0.7 s of kernel time per
      346-ECG ingest. Fixed, 80–95 k faults and ~0.35 s (ingest +3–4 %, BENCHMARKS.md); the
      trim thread still returns what is free every ``trim_every_s``.

    Call it before the server starts its threads. ``MALLOC_ARENA_MAX`` in the environment wins, and
    ``ECG_ATLAS_MALLOC_TUNING=0`` leaves glibc alone. Returns what was applied.
    """
    applied = {"arena_max": False, "thresholds": False, "trim_thread": False}
    if not sys.platform.startswith("linux") or os.environ.get("ECG_ATLAS_MALLOC_TUNING") == "0":
        return applied
    try:
        libc = ctypes.CDLL("libc.so.6")
        if not os.environ.get("MALLOC_ARENA_MAX"):
            applied["arena_max"] = bool(libc.mallopt(M_ARENA_MAX, arenas))
        if not any(os.environ.get(v) for v in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")):
            applied["thresholds"] = bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and \
                bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD_BYTES))
        trim = libc.malloc_trim
    except (OSError, AttributeError):  # not glibc (e.g. musl): nothing to tune
        return applied

    def trimmer() -> None:
        while True:
            time.sleep(trim_every_s)
            trim(0)

    threading.Thread(target=trimmer, name="malloc-trim", daemon=True).start()
    applied["trim_thread"] = True
    return applied



def tune_process() -> dict[str, bool]:
    """``tune_malloc()`` the first time it is called in this process; what was applied."""
    global _applied
    with _once:
        if _applied is None:
            _applied = tune_malloc()
        return _applied
