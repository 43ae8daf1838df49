"""Service overhead: ingest, search and concurrent embedding over gRPC against bare references
measured in the same run (figures for BENCHMARKS.md; never in tests).

    python benchmarks/service.py                        # all three parts, the bundled encoder, CPU
    python benchmarks/service.py --only search          # one part: ingest | search | concurrency | preprocess

The bare references run in this process under the allocator settings the server applies to itself
(``ecg_atlas.service.allocator.tune_malloc``; ``--bare-default-malloc`` for glibc's defaults), so that a
ratio shows what the service adds rather than what the allocator changes.

* ingest: ECGs/s of `ecg-atlas ingest`'s code path (read files, stream, server preprocesses,
  embeds, stores) against the bare encoder's ECGs/s on the same ECGs' segments, prepared before
  timing, in every layout the server could use: each batch size of --bare-batches, run by one
  ``EmbeddingEngine`` on all cores and by --bare-workers threads side by side on a share of the
  cores each (target service / best bare >= 0.85; medians of --repeats);
* search: p50 / p99 latency of Search by vector over loopback at 100k stored ECGs against the
  bare ``Store.search`` on the same store returning the same columns (target p50 delta <= 3 ms);
* concurrency: 32 clients calling Embed (10-s ECGs) for ``--seconds`` against one client sending
  full batches (64 segments per call); segments/s ratio (target >= 0.9), errors, server RSS.
* preprocess: decoding + preprocessing on worker processes (``serve --preprocess-processes 2``)
  against threads (``0``), the sample corpus as ingest sends it (int16 where the file holds it).
  In this process: CPU ms per ECG of the calling process (``RUSAGE_SELF``) for decode + prepare of
  every ECG on 2 threads vs through a ``PreparePool`` of 2 processes (its own CPU read from
  /proc). Through a server with the tiny checkpoint (a nearly free encoder, so preprocessing is
  what is left): Ingest ECGs/s and the server process's own CPU ms per ECG, runs alternating.

The server is a real `ecg-atlas serve` subprocess on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ECG_ATLAS_SHARED_DATA", REPO.parent / "shared" / "data"))
CLI = Path(sys.executable).with_name("ecg-atlas")


class Server:
    def __init__(self, store: Path, checkpoint: str, *extra: str, env: dict | None = None):
        self.process = subprocess.Popen(
            [str(CLI), "serve", "--store", str(store), "--checkpoint", checkpoint, "--device", "cpu", "--port", "0",
             *extra], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, **(env or {})})
        self.address = self.process.stdout.readline().split()[2]  # "starting on ADDRESS (...)"
        from ecg_atlas.client import Client

        with Client(self.address) as c:
            c.wait_ready(timeout=300)

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(120)


def _bare_side_by_side(encoder, records, batch: int, workers: int) -> float:
    """ECGs/s of ``workers`` threads each embedding whole batches, torch threads split between them."""
    from concurrent.futures import ThreadPoolExecutor

    import torch

    cores = torch.get_num_threads()
    torch.set_num_threads(max(1, cores // workers))
    try:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(encoder.embed, [records[0][1]] * workers))  # warm-up, every worker
            segments = np.concatenate([s for _, s in records])
            batches = [segments[i:i + batch] for i in range(0, len(segments), batch)]
            started = time.perf_counter()
            list(pool.map(encoder.embed, batches))
            return len(records) / (time.perf_counter() - started)
    finally:
        torch.set_num_threads(cores)


def bench_ingest(args) -> dict:
    from ecg_atlas.client import Client
    from ecg_atlas.embedder import load_encoder
    from ecg_atlas.embedder.discover import find_ecgs, read_source
    from ecg_atlas.embedder.engine import EmbeddingEngine
    from ecg_atlas.embedder.preprocessing import prepare
    from ecg_atlas.ingest.stream import ingest_files

    ecg_dir = SHARED / "ecg"
    records, files = [], []
    for source in find_ecgs([ecg_dir]):
        try:
            records.append((source.ecg_id, prepare(read_source(source)).segments))
        except ValueError:
            continue
        files.append(source.path)
    paths = [ecg_dir]  # the whole directory: its unusable files are part of a real ingest
    if args.ecgs is not None:  # usable ECGs spread evenly over the sorted corpus (every database)
        keep = np.unique(np.linspace(0, len(records) - 1, min(args.ecgs, len(records))).round().astype(int))
        records, paths = [records[i] for i in keep], [files[i] for i in keep]
    n_segments = sum(len(s) for _, s in records)
    encoder = load_encoder(args.checkpoint, device="cpu")
    layouts = [(b, w) for w in args.bare_workers for b in args.bare_batches]
    bare_runs: dict[tuple[int, int], list[float]] = {layout: [] for layout in layouts}
    service_runs, timings = [], []
    # Bare and service passes alternate so drifts in the machine's speed hit both alike; medians
    # over --repeats. The bare encoder runs in every layout: the one matching the server's batch
    # limit and workers isolates what the service adds; the best one is the stricter reference.
    for _ in range(args.repeats):
        for batch, workers in layouts:
            if workers == 1:
                engine = EmbeddingEngine(encoder, batch_size=batch)
                engine.embed_segments(records[0][1])  # warm-up
                started = time.perf_counter()
                for _ in engine.embed_records(records):
                    pass
                bare_runs[batch, workers].append(len(records) / (time.perf_counter() - started))
            else:
                bare_runs[batch, workers].append(_bare_side_by_side(encoder, records, batch, workers))
        with tempfile.TemporaryDirectory() as tmp:
            server = Server(Path(tmp) / "store", args.checkpoint, *args.server_args,
                            env=dict(kv.split("=", 1) for kv in args.server_env))
            try:
                with Client(server.address) as client:
                    result = ingest_files(client, paths)
                    limits = client.info()["limits"]
            finally:
                server.stop()
        service_runs.append(result["stored"] / result["seconds"])
        timings.append(result["server_timing_ms"])
    bare = {f"b{b}x{w}": float(np.median(r)) for (b, w), r in bare_runs.items()}
    service = float(np.median(service_runs))
    best = max(bare, key=bare.get)
    server_layout = f"b{limits['max_batch_segments']}x{limits['encoder_workers']}"
    out = {"ecgs": len(records), "segments": n_segments, "stored": result["stored"], "repeats": args.repeats,
           "bare_ecgs_per_s_by_layout": {k: round(r, 2) for k, r in bare.items()},
           "service_ecgs_per_s_runs": [round(r, 2) for r in service_runs], "service_ecgs_per_s": round(service, 2),
           "server_layout": server_layout, "server_threads_per_worker": limits["threads_per_encoder_worker"],
           "ratio_to_best_bare": round(service / bare[best], 3), "best_bare_layout": best, "target_ratio": 0.85,
           "server_timing_ms_last": timings[-1]}
    if server_layout in bare:
        out["ratio_to_bare_in_server_layout"] = round(service / bare[server_layout], 3)
    return out


def bench_search(args) -> dict:
    from ecg_atlas.client import Client
    from ecg_atlas.embedder import load_encoder
    from ecg_atlas.index import EncoderIdentity, Store

    encoder = load_encoder(args.checkpoint, device="cpu")
    identity = EncoderIdentity(encoder.model_id, encoder.checkpoint_sha256, encoder.contract.preprocessing_version,
                               encoder.dim)
    rng = np.random.default_rng(0)
    queries = rng.standard_normal((args.queries, encoder.dim)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        store_dir = Path(tmp) / "store"
        with Store.open(store_dir, identity=identity) as store:
            for start in range(0, args.stored, 10_000):
                n = min(10_000, args.stored - start)
                store.upsert([f"ecg-{start + i}" for i in range(n)],
                             rng.standard_normal((n, encoder.dim)).astype(np.float32), identity=identity,
                             patient_ids=[f"p-{(start + i) // 3}" for i in range(n)],
                             metadata=[{"age": int(a)} for a in rng.integers(18, 95, n)])
        # Service and bare phases alternate (the store can be open in one process at a time), so
        # both sample the same drifts of this machine; percentiles over the pooled latencies.
        served, bare = [], []
        for chunk in np.array_split(queries, args.search_rounds):
            server = Server(store_dir, args.checkpoint)
            try:
                with Client(server.address) as client:
                    client.search(vector=chunk[0], k=10)
                    for q in chunk:
                        t = time.perf_counter()
                        client.search(vector=q, k=10)
                        served.append(time.perf_counter() - t)
            finally:
                server.stop()
            with Store.open(store_dir) as store:
                columns = list(store.columns())
                store.search(chunk[0], k=10, columns=columns)
                for q in chunk:
                    t = time.perf_counter()
                    store.search(q, k=10, columns=columns)
                    bare.append(time.perf_counter() - t)
    def ms(xs, p):
        return round(1000 * float(np.percentile(xs, p)), 2)

    return {"stored": args.stored, "dim": encoder.dim, "k": 10, "queries": args.queries,
            "bare_p50_ms": ms(bare, 50), "bare_p99_ms": ms(bare, 99),
            "service_p50_ms": ms(served, 50), "service_p99_ms": ms(served, 99),
            "p50_delta_ms": round(ms(served, 50) - ms(bare, 50), 2), "target_delta_ms": 3.0}


def bench_concurrency(args) -> dict:
    import grpc

    from ecg_atlas.client import Client
    from ecg_atlas.embedder import read_ecg

    recording = read_ecg(SHARED / "ecg" / "cinc_georgia" / "E00001")  # 10 s, 500 Hz: 2 segments
    long_signal = np.tile(recording.signal, (1, 32))  # 320 s: 64 segments, one full batch per call
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "store", args.checkpoint)
        try:
            with Client(server.address) as client:
                client.embed(long_signal, recording.fs, recording.lead_names)
                n, started = 0, time.perf_counter()
                while time.perf_counter() - started < args.seconds / 3:
                    client.embed(long_signal, recording.fs, recording.lead_names)
                    n += 64
                single = n / (time.perf_counter() - started)
            rss_start = server.rss_mb()
            stop = time.perf_counter() + args.seconds
            counts, errors, lock = [], {}, threading.Lock()
            samples = []

            def worker():
                done = 0
                with Client(server.address) as c:
                    while time.perf_counter() < stop:
                        try:
                            c.embed(recording.signal, recording.fs, recording.lead_names)
                            done += 2
                        except grpc.RpcError as exc:
                            with lock:
                                errors[exc.code().name] = errors.get(exc.code().name, 0) + 1
                with lock:
                    counts.append(done)

            threads = [threading.Thread(target=worker) for _ in range(args.clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            while any(t.is_alive() for t in threads):
                samples.append(server.rss_mb())
                time.sleep(1)
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
        finally:
            server.stop()
    many = sum(counts) / elapsed
    return {"clients": args.clients, "seconds": args.seconds, "single_client_batch_segments_per_s": round(single, 2),
            "concurrent_segments_per_s": round(many, 2), "ratio": round(many / single, 3), "target_ratio": 0.9,
            "errors": errors, "server_rss_mb_start": round(rss_start, 1),
            "server_rss_mb_first_third": round(float(np.median(samples[: max(1, len(samples) // 3)])), 1),
            "server_rss_mb_last_third": round(float(np.median(samples[-max(1, len(samples) // 3):])), 1),
            # one sample a second: the median of each minute shows a plateau or a climb
            "server_rss_mb_by_minute": [round(float(np.median(samples[i:i + 60])), 1)
                                        for i in range(0, len(samples), 60)],
            "server_rss_mb_max": round(float(max(samples)), 1)}


def _cpu_s(pids) -> float:
    """User + system CPU seconds of live processes, from /proc (their children not included)."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def _descendants(pid: int) -> list[int]:
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except OSError:
                continue
    found, frontier = [], [pid]
    while frontier:
        children = [child for child, parent in parents.items() if parent in frontier]
        found += children
        frontier = children
    return found


def bench_preprocess(args) -> dict:
    import resource
    from concurrent.futures import ThreadPoolExecutor

    from ecg_atlas.client import Client, IngestItem, ingest_request
    from ecg_atlas.embedder.discover import find_ecgs, read_source
    from ecg_atlas.embedder.preprocessing import prepare
    from ecg_atlas.service.prepare_pool import PreparePool, Preprocessing

    items = []
    for source in find_ecgs([SHARED / "ecg"]):
        try:
            recording = read_source(source)
            prepare(recording)
        except ValueError:
            continue
        items.append(IngestItem.from_recording(source.ecg_id, recording))
    messages = [ingest_request(item).ecg for item in items]
    preprocessing = Preprocessing(prepare, 8, 600.0)  # the server's defaults

    def parent_cpu_ms_per_ecg(run, workers) -> tuple[float, float]:
        started, cpu = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
        with ThreadPoolExecutor(workers) as threads:
            list(threads.map(run, messages))
        used = resource.getrusage(resource.RUSAGE_SELF)
        seconds = used.ru_utime + used.ru_stime - cpu.ru_utime - cpu.ru_stime
        return 1000 * seconds / len(messages), len(messages) / (time.perf_counter() - started)

    pool = PreparePool(preprocessing, 2)
    pool.warm_up()
    workers = _descendants(os.getpid())
    local = {"threads": [], "processes": [], "processes_workers_cpu_ms": []}
    try:
        for _ in range(args.repeats):
            local["threads"].append(parent_cpu_ms_per_ecg(preprocessing.message, 2))
            before = _cpu_s(workers)
            local["processes"].append(parent_cpu_ms_per_ecg(pool.prepare, 4))  # as the server: 2 threads a process
            local["processes_workers_cpu_ms"].append(1000 * (_cpu_s(workers) - before) / len(messages))
    finally:
        pool.close()

    tiny = str(SHARED / "parity" / "tiny_pretrained.pt")
    copies = 3  # the corpus three times under other ids: enough ECGs for a stable rate
    requests = []
    for copy in range(copies):
        for item in items:
            request = ingest_request(item)
            request.ecg_id = f"{copy}/{item.ecg_id}"
            requests.append(request)
    served = {"0": [], "2": []}
    for _ in range(args.repeats):
        for processes in served:
            with tempfile.TemporaryDirectory() as tmp:
                server = Server(Path(tmp) / "store", tiny, "--preprocess-processes", processes)
                try:
                    helpers = _descendants(server.process.pid)
                    own, others = _cpu_s([server.process.pid]), _cpu_s(helpers)
                    with Client(server.address) as client:
                        started = time.perf_counter()
                        response = client.ingest(requests)
                        elapsed = time.perf_counter() - started
                    stored = response.stored
                    served[processes].append((stored / elapsed, 1000 * (_cpu_s([server.process.pid]) - own) / stored,
                                              1000 * (_cpu_s(helpers) - others) / stored))
                finally:
                    server.stop()
    def med(runs, i):
        return round(float(np.median([r[i] for r in runs])), 3)

    return {
        "ecgs": len(messages), "repeats": args.repeats, "load_average": os.getloadavg(),
        "in_process": {
            "threads_parent_cpu_ms_per_ecg": med(local["threads"], 0),
            "processes_parent_cpu_ms_per_ecg": med(local["processes"], 0),
            "processes_workers_cpu_ms_per_ecg": round(float(np.median(local["processes_workers_cpu_ms"])), 3),
            "parent_cpu_ratio_processes_to_threads": round(med(local["processes"], 0) / med(local["threads"], 0), 3),
            "threads_ecgs_per_s": med(local["threads"], 1), "processes_ecgs_per_s": med(local["processes"], 1),
            "runs": local},
        "ingest_tiny_encoder": {
            "ecgs": len(requests), "stored": stored,
            "threads_ecgs_per_s": med(served["0"], 0), "processes_ecgs_per_s": med(served["2"], 0),
            "ratio_processes_to_threads": round(med(served["2"], 0) / med(served["0"], 0), 3),
            "threads_server_cpu_ms_per_ecg": med(served["0"], 1),
            "processes_server_cpu_ms_per_ecg": med(served["2"], 1),
            "processes_workers_cpu_ms_per_ecg": med(served["2"], 2),
            "runs": served},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["ingest", "search", "concurrency", "preprocess"], default=None)
    parser.add_argument("--checkpoint", default="bundled", help="encoder spec (default: bundled, the service default)")
    parser.add_argument("--stored", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--search-rounds", type=int, default=3, help="search: alternating service/bare phases")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--repeats", type=int, default=3,
                        help="ingest, preprocess: alternating passes (medians reported)")
    parser.add_argument("--bare-batches", type=int, nargs="+", default=[8, 16, 32, 64],
                        help="batch sizes for the bare ingest reference (the best layout is the reference)")
    parser.add_argument("--ecgs", type=int, default=None,
                        help="ingest: N usable sample ECGs spread over the corpus (default: the whole directory)")
    parser.add_argument("--bare-workers", type=int, nargs="+", default=[1, 2],
                        help="bare ingest reference: threads embedding batches side by side (1 = one engine)")
    parser.add_argument("--server-env", nargs="*", default=[], metavar="KEY=VALUE",
                        help="environment variables for the ingest part's server only")
    parser.add_argument("--server-args", nargs=argparse.REMAINDER, default=[],
                        help="extra `ecg-atlas serve` options for the ingest part (last on the line)")
    parser.add_argument("--bare-default-malloc", action="store_true",
                        help="run the bare references with glibc's default allocator settings instead of the "
                             "server's (tune_malloc)")
    args = parser.parse_args()
    # The bare references run under the allocator settings the server applies to itself, so a
    # ratio measures what the service adds, not what the allocator changes (both gain from them).
    from ecg_atlas.service.allocator import tune_malloc

    allocator = {"bare_allocator": "glibc defaults"} if args.bare_default_malloc else \
        {"bare_allocator": "server settings", **tune_malloc()}
    import torch

    print(json.dumps({"machine": {"cpus": os.cpu_count(), "torch": torch.__version__,
                                  "torch_threads": torch.get_num_threads(), "gpu": torch.cuda.is_available()},
                      "checkpoint": args.checkpoint, **allocator}), flush=True)
    parts = {"ingest": bench_ingest, "search": bench_search, "concurrency": bench_concurrency,
             "preprocess": bench_preprocess}
    for name, bench in parts.items():
        if args.only in (None, name):
            print(json.dumps({name: bench(args)}), flush=True)


if __name__ == "__main__":
    main()
