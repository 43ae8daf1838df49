"""The GPU figures of issue 18 in one prepared run: ≤ 8 minutes on a bare GPU machine.

    python benchmarks/gpu.py                      # every step on cuda; JSON lines to runs/gpu_bench.jsonl
    python benchmarks/gpu.py --only accuracy,search --out my.jsonl
    python benchmarks/gpu.py --dry-run            # every step, tiny, on the CPU (a test runs this)

Each result is a JSON line written (and flushed) the moment it is measured, so a run cut short by
a timeout still leaves everything that ran; a step that fails writes its error and the run goes
on. Steps:

* ``setup``: driver and CUDA version (nvidia-smi), torch and its CUDA build, GPU name, TF32 and
  SDPA flags, faiss GPU support, and the same-run dense bf16 GEMM rate (the ceiling MFU is
  measured against; the datasheet peak is printed beside it);
* ``accuracy``: bf16 / fp16 / fp32 on the device against CPU fp32 on real segments
  (../shared/data/ecg): cosine of the embeddings and top-5 neighbour overlap, for the bundled
  encoder (real weights) and ECG-FM's size (random weights);
* ``dispatch``: host time of one forward of ECG-FM's op graph with widths shrunk until the
  arithmetic is negligible (the Python and dispatcher work a GPU forward costs the host, under
  the GIL), ops, casts and weight casts per forward; on a GPU also the host time next to the
  GPU's own time for a batch of ECG-FM's size;
* ``throughput``: bare encoder segments/s, TFLOP/s and MFU at batches 64–512, eager and compiled;
* ``ingest``: the batching encoder with preprocessing on worker threads (the server's path)
  against the bare encoder on the same ECGs; host ms per ECG;
* ``ingest_processes``: does ``serve --preprocess-processes`` pay? The same ECGs as Ingest
  messages (decode + preprocess, as the server gets them), fed to the batching encoder from
  threads and from the preprocessing process pool (``prepare_pool.PreparePool``, the server's
  auto process count), each as a ratio to the bare encoder measured in the step; this process's
  CPU ms per ECG beside each;
* ``search``: torch exact search at 1 M × 768 (and FAISS GPU's flat index when installed), with
  tombstones past FAISS GPU's k limit;
* ``pretrain``: pretraining segments/s of ECG-FM's size;
* peak device memory after every step (``peak_mb``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ECG_ATLAS_SHARED_DATA", REPO.parent / "shared" / "data"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.append(str(REPO))  # tools/: the set-up scripts beside the package

from encoder import H100_BF16_DENSE_TFLOPS, cosine, real_segments

STEPS = ("setup", "accuracy", "dispatch", "throughput", "ingest", "ingest_processes", "search", "pretrain")


@dataclass(frozen=True)
class Plan:
    """How big each step is: the GPU run, or the dry run's tiny version of every step."""

    device: str
    accuracy_encoders: tuple[str, ...]
    accuracy_segments: int
    dtypes: tuple[str, ...]
    preset: str  # the architecture timed for throughput (ECG-FM's size: base)
    batches: tuple[int, ...]
    compiled_batches: tuple[int, ...]
    seconds: float  # timing window per throughput figure
    compile_backend: str  # torch.compile backend for the compiled path
    compile_budget_s: float  # compiled batch sizes not reached by then are skipped (each compiles once)
    ingest_ecgs: int
    preprocess_workers: int
    preprocess_processes: int | None  # ingest_processes: None = the server's auto count on a GPU
    search_rows: int
    search_dim: int
    pretrain_preset: str
    pretrain_pairs: int
    pretrain_updates: int
    gemm_shapes: tuple[tuple[int, int, int], ...]  # (m, k, n) products timed for the GEMM ceiling
    dispatch_repeats: int


GPU_PLAN = Plan(device="cuda", accuracy_encoders=("bundled", "random:base"), accuracy_segments=256,
                dtypes=("float32", "bfloat16", "float16"), preset="base", batches=(64, 128, 256, 512),
                compiled_batches=(64, 128, 256, 512),
                seconds=3.0, compile_backend="inductor", compile_budget_s=180.0, ingest_ecgs=3000, preprocess_workers=8,
                preprocess_processes=None,
                search_rows=1_000_000, search_dim=768, pretrain_preset="base", pretrain_pairs=64,
                pretrain_updates=30, gemm_shapes=((156 * 64, 768, 3072), (156 * 64, 3072, 768), (8192, 8192, 8192)),
                dispatch_repeats=30)
# The dry run exercises every code path on the CPU in seconds: bf16 through the same autocast path
# (fp16 is GPU-only), the compiled path traced by dynamo but run eagerly (no code generation).
DRY_PLAN = Plan(device="cpu", accuracy_encoders=("bundled",), accuracy_segments=8,
                dtypes=("float32", "bfloat16"), preset="tiny", batches=(2, 4), compiled_batches=(2,), seconds=0.1,
                compile_backend="eager", compile_budget_s=60.0, ingest_ecgs=24, preprocess_workers=2,
                preprocess_processes=1,
                search_rows=10_000, search_dim=768, pretrain_preset="tiny", pretrain_pairs=2, pretrain_updates=2,
                gemm_shapes=((156 * 8, 768, 768),), dispatch_repeats=10)


class Results:
    """JSON lines, one per figure, flushed as they come (a timeout keeps what ran)."""

    def __init__(self, path: Path, device: str):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a", buffering=1)
        self.device = device

    def write(self, step: str, **fields) -> dict:
        row = {"step": step, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **fields}
        line = json.dumps(row, default=_plain)
        self.file.write(line + "\n")
        self.file.flush()
        print(line, flush=True)
        return row

    def peak(self, step: str) -> None:
        if self.device.startswith("cuda"):
            peak = torch.cuda.max_memory_allocated() / 2**20
            torch.cuda.reset_peak_memory_stats()
            self.write(step, what="peak_memory", peak_mb=round(peak, 1), kind="cuda max_memory_allocated")
        else:
            rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
            self.write(step, what="peak_memory", peak_mb=round(rss, 1), kind="process peak RSS")


def _plain(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def _sync(device: str):
    return torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)


def _gflop(preset: str) -> float:
    from ecg_atlas.embedder.model import PRESETS, flops_per_segment

    return flops_per_segment(PRESETS[preset]) / 1e9


# ---------------------------------------------------------------------------------------------
# steps


def step_setup(plan: Plan, out: Results, ceiling: dict) -> None:
    import faiss

    from tools.setup_torch import parse_nvidia_smi, run_nvidia_smi

    driver = parse_nvidia_smi(run_nvidia_smi())
    cuda = plan.device.startswith("cuda")
    fields = {
        "python": sys.version.split()[0], "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
        "driver": driver.version if driver else None,
        "driver_cuda": ".".join(map(str, driver.cuda)) if driver else None,
        "cuda_available": torch.cuda.is_available(), "faiss": faiss.__version__,
        "faiss_gpus": faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0,
    }
    if cuda:
        props = torch.cuda.get_device_properties(0)
        fields.update(gpu=props.name, capability=f"{props.major}.{props.minor}",
                      gpu_memory_gb=round(props.total_memory / 1e9, 1),
                      tf32_matmul=torch.backends.cuda.matmul.allow_tf32, tf32_cudnn=torch.backends.cudnn.allow_tf32,
                      matmul_precision=torch.get_float32_matmul_precision(),
                      sdpa_flash=torch.backends.cuda.flash_sdp_enabled(),
                      sdpa_mem_efficient=torch.backends.cuda.mem_efficient_sdp_enabled())
    dtype = torch.bfloat16 if cuda else torch.float32
    gflops = gemm_gflops(plan.device, dtype, plan.gemm_shapes)
    ceiling["tflops"] = gflops / 1000
    out.write("setup", **fields, gemm_dtype=str(dtype).removeprefix("torch."), gemm_tflops=round(gflops / 1000, 3),
              datasheet_bf16_dense_tflops=H100_BF16_DENSE_TFLOPS if cuda else None)


def gemm_gflops(device: str, dtype: torch.dtype, shapes, seconds: float = 0.3) -> float:
    """The best dense GEMM rate over ``shapes`` now (the ceiling MFU is measured against)."""
    sync = _sync(device)
    best = 0.0
    for m, k, n in shapes:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        a @ b
        sync()
        count, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds or count < 3:
            a @ b
            count += 1
        sync()
        best = max(best, count * 2 * m * k * n / (time.perf_counter() - started) / 1e9)
    return best


def _embed_all(encoder, x: np.ndarray, batch: int) -> np.ndarray:
    return np.concatenate([encoder.embed(x[i:i + batch]) for i in range(0, len(x), batch)])


def top_k_overlap(vectors: np.ndarray, reference: np.ndarray, k: int = 5) -> float:
    """Mean share of each segment's k nearest others (cosine) that `vectors` and `reference` agree on."""
    def neighbours(v):
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        sim = v @ v.T
        np.fill_diagonal(sim, -np.inf)
        return np.argsort(-sim, axis=1, kind="stable")[:, :k]

    a, b = neighbours(vectors), neighbours(reference)
    return float(np.mean([len(set(r) & set(s)) / k for r, s in zip(a, b)]))


def step_accuracy(plan: Plan, out: Results, ceiling: dict) -> None:
    from ecg_atlas.embedder import load_encoder

    x = real_segments(plan.accuracy_segments)
    for spec in plan.accuracy_encoders:
        reference = _embed_all(load_encoder(spec, device="cpu", dtype="float32"), x, 32)
        for dtype in plan.dtypes:
            encoder = load_encoder(spec, device=plan.device, dtype=dtype)
            vectors = _embed_all(encoder, x, 64)
            cos = cosine(vectors, reference)
            out.write("accuracy", encoder=spec, device=plan.device, dtype=dtype, reference="cpu float32",
                      segments=len(x), output_dtype=str(vectors.dtype), cosine_min=round(float(cos.min()), 7),
                      cosine_mean=round(float(cos.mean()), 7), top5_overlap=round(top_k_overlap(vectors, reference), 4))
            del encoder


class _OpCounter(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the aten ops of a forward, its dtype casts, and the casts of the model's weights."""

    def __init__(self, weights: set[int]):
        super().__init__()
        self.weights = weights
        self.ops = self.casts = self.weight_casts = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        out = func(*args, **(kwargs or {}))
        # `to` as autocast calls it; a `.float()` of a float32 tensor is no cast
        if func.overloadpacket.__name__ in ("to", "_to_copy") and out.dtype != args[0].dtype:
            self.casts += 1
            if args[0].untyped_storage().data_ptr() in self.weights:
                self.weight_casts += 1
        return out


def count_ops(encoder, x) -> _OpCounter:
    """Ops, casts and weight casts of one ``encoder.embed(x)``."""
    weights = {p.untyped_storage().data_ptr() for p in encoder.model.parameters()}
    weights |= {b.untyped_storage().data_ptr() for b in encoder.model.buffers()}
    counter = _OpCounter(weights)
    with counter:
        encoder.embed(x)
    return counter


#: ECG-FM's op graph (12 layers, the same convolutions, positional conv and attention) with widths
#: shrunk until the arithmetic is negligible: the time of one forward is the host's dispatch work.
SKELETON = dict(conv_layers=((16, 2, 2),) * 4, encoder_layers=12, embed_dim=32, ffn_dim=32, heads=2)


def _skeleton_encoder(device: str, dtype: str):
    from ecg_atlas.embedder import Encoder
    from ecg_atlas.embedder.model import ECGFM, ECGFMConfig, init_weights

    network = init_weights(ECGFM(ECGFMConfig(**SKELETON)), seed=0)
    return Encoder(network, model_id="skeleton", checkpoint_sha256="none", device=device, dtype=dtype)


def _host_ms(encoder, x, repeats: int) -> float:
    encoder.embed(x)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        encoder.embed(x)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def step_dispatch(plan: Plan, out: Results, ceiling: dict) -> None:
    from ecg_atlas.embedder import random_encoder

    x = torch.from_numpy(real_segments(1)).to(plan.device)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # dispatch is one thread's work; a thread team only adds its wake-ups
    try:
        for dtype in plan.dtypes:
            if dtype == "float16" and plan.device == "cpu":
                continue
            skeleton = _skeleton_encoder(plan.device, dtype)
            counts = count_ops(skeleton, x)
            out.write("dispatch", what="host ms per forward of ECG-FM's op graph (skeleton widths, batch 1)",
                      device=plan.device, dtype=dtype, host_ms=round(_host_ms(skeleton, x, plan.dispatch_repeats), 3),
                      ops=counts.ops,
                      casts=counts.casts, weight_casts=counts.weight_casts)
    finally:
        torch.set_num_threads(threads)
    if plan.device.startswith("cuda"):
        encoder = random_encoder("base", device=plan.device, dtype="bfloat16")
        for batch in plan.batches:
            x = torch.from_numpy(real_segments(batch)).to(plan.device)
            encoder.embed(x)
            torch.cuda.synchronize()
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            host, device_ms = [], []
            for _ in range(10):
                start.record()
                began = time.perf_counter()
                encoder.embed(x)
                host.append(time.perf_counter() - began)
                end.record()
                torch.cuda.synchronize()
                device_ms.append(start.elapsed_time(end))
            out.write("dispatch", what="host vs GPU time per forward (bf16, base)", batch=batch,
                      host_ms=round(1000 * statistics.median(host), 3), gpu_ms=round(statistics.median(device_ms), 3))


def step_throughput(plan: Plan, out: Results, ceiling: dict) -> None:
    from ecg_atlas.embedder import random_encoder

    gflop = _gflop(plan.preset)
    sync = _sync(plan.device)
    dtype = "bfloat16"
    x_all = torch.from_numpy(real_segments(max(plan.batches))).to(plan.device)
    for compiled in (False, True):
        encoder = random_encoder(plan.preset, device=plan.device, dtype=dtype, fast="compile" if compiled else None)
        compile_until = time.monotonic() + plan.compile_budget_s
        for batch in plan.compiled_batches if compiled else plan.batches:
            if compiled and time.monotonic() > compile_until:
                out.write("throughput", compiled=True, batch=batch, skipped=True,
                          why=f"compiling took past its {plan.compile_budget_s:.0f}-s budget")
                continue
            x = x_all[:batch]
            started = time.perf_counter()
            encoder.embed(x)  # the compiled path compiles here, once per batch size
            sync()
            first_s = time.perf_counter() - started
            done, started = 0, time.perf_counter()
            while True:
                encoder.embed(x)
                done += batch
                if done >= 3 * batch and time.perf_counter() - started >= plan.seconds:
                    sync()  # the GPU finishes what was queued before the clock stops
                    elapsed = time.perf_counter() - started
                    break
            rate = done / elapsed
            tflops = rate * gflop / 1000
            out.write("throughput", preset=plan.preset, device=plan.device, dtype=dtype, compiled=compiled,
                      batch=batch, segments_per_s=round(rate, 1), tflops=round(tflops, 4),
                      mfu_vs_gemm_now=round(tflops / ceiling["tflops"], 4) if ceiling.get("tflops") else None,
                      mfu_vs_datasheet=round(tflops / H100_BF16_DENSE_TFLOPS, 4) if plan.device != "cpu" else None,
                      first_call_s=round(first_s, 2))
        del encoder


@functools.lru_cache(maxsize=1)  # both ingest steps take the same ECGs, read once
def _corpus(n: int):
    """Up to ``n`` readable ECG recordings (repeated when the corpus has fewer), held in memory as
    the server holds them once decoded from the wire, and the ms it took to read each."""
    from ecg_atlas.embedder.discover import find_ecgs, read_source
    from ecg_atlas.embedder.preprocessing import prepare

    recs, read_ms = [], []
    for source in find_ecgs([SHARED / "ecg" / "cinc_cpsc2018", SHARED / "ecg" / "cinc_georgia",
                             SHARED / "ecg" / "cinc_ptbxl"]):
        started = time.perf_counter()
        try:
            rec = read_source(source)
            prepare(rec)
        except ValueError:
            continue
        read_ms.append(1000 * (time.perf_counter() - started))
        recs.append(rec)
        if len(recs) >= min(n, 400):
            break
    return (recs * -(-n // len(recs)))[:n], statistics.median(read_ms)


def step_ingest(plan: Plan, out: Results, ceiling: dict) -> None:
    from ecg_atlas.embedder.preprocessing import prepare

    recs, read_prepare_ms = _corpus(plan.ingest_ecgs)
    started = time.perf_counter()
    prepared = [(i, prepare(rec).segments) for i, rec in enumerate(recs)]
    prepare_ms = 1000 * (time.perf_counter() - started) / len(recs)
    segments = sum(len(s) for _, s in prepared)
    with _served_encoder(plan) as (encoder, batch, workers):
        bare = _bare_rate(plan, encoder, prepared, batch)
        served, _ = _batching_rate(encoder, batch, workers, recs, lambda rec: prepare(rec).segments,
                                   plan.preprocess_workers)
    out.write("ingest", preset=plan.preset, device=plan.device, dtype=encoder.dtype, ecgs=len(recs), segments=segments,
              batch=batch, encoder_workers=workers, preprocess_workers=plan.preprocess_workers,
              bare_ecgs_per_s=round(bare, 2), batching_ecgs_per_s=round(served, 2), ratio=round(served / bare, 3),
              target_ratio=0.85, host_preprocess_ms_per_ecg=round(prepare_ms, 3),
              host_read_and_prepare_ms_per_ecg=round(read_prepare_ms, 3))


def step_ingest_processes(plan: Plan, out: Results, ceiling: dict) -> None:
    """Ingest from ECG messages (decode + preprocess, as the server gets them) on preprocessing
    threads, then on the preprocessing processes, each against the bare encoder on the same ECGs."""
    from ecg_atlas.client import IngestItem, ingest_request
    from ecg_atlas.service.config import ServerConfig, default_preprocess_processes
    from ecg_atlas.service.prepare_pool import PreparePool, Preprocessing

    processes = plan.preprocess_processes or default_preprocess_processes("cuda", os.cpu_count() or 1)
    feeders = max(plan.preprocess_workers, 2 * processes)  # as the server: two threads per process
    with _served_encoder(plan) as (encoder, batch, workers):
        preprocessing = Preprocessing(encoder.preprocessing, ServerConfig.min_leads, ServerConfig.max_ecg_duration_s)
        recs, _ = _corpus(plan.ingest_ecgs)
        # as `ecg-atlas ingest` sends them: int16 samples and gain where the file holds them
        messages = [ingest_request(IngestItem.from_recording(str(i), rec)).ecg for i, rec in enumerate(recs)]
        prepared = [(i, preprocessing.message(message)[1].segments) for i, message in enumerate(messages)]
        bare = _bare_rate(plan, encoder, prepared, batch)
        on_threads, threads_cpu_ms = _batching_rate(encoder, batch, workers, messages,
                                                    lambda message: preprocessing.message(message)[1].segments,
                                                    plan.preprocess_workers)
        pool = PreparePool(preprocessing, processes)
        try:
            pool.warm_up()  # each worker imports this script (torch included) before its first ECG
            on_processes, processes_cpu_ms = _batching_rate(encoder, batch, workers, messages,
                                                            lambda message: pool.prepare(message)[1].segments, feeders)
        finally:
            pool.close()
    out.write("ingest_processes", preset=plan.preset, device=plan.device, dtype=encoder.dtype, ecgs=len(messages),
              segments=sum(len(s) for _, s in prepared), batch=batch, encoder_workers=workers,
              preprocess_workers=plan.preprocess_workers, preprocess_processes=processes,
              processes_feeder_threads=feeders, bare_ecgs_per_s=round(bare, 2),
              threads_ecgs_per_s=round(on_threads, 2), processes_ecgs_per_s=round(on_processes, 2),
              threads_ratio=round(on_threads / bare, 3), processes_ratio=round(on_processes / bare, 3),
              processes_vs_threads=round(on_processes / on_threads, 3), target_ratio=0.85,
              host_cpu_ms_per_ecg_threads=round(threads_cpu_ms, 3),
              host_cpu_ms_per_ecg_processes=round(processes_cpu_ms, 3))


@contextmanager
def _served_encoder(plan: Plan):
    """(encoder, batch segments, encoder workers) as the server runs them: on a CPU the cores
    shared between the workers (torch threads restored after)."""
    from ecg_atlas.embedder import load_encoder
    from ecg_atlas.service.config import default_batch_segments, default_encoder_workers

    encoder = load_encoder("random:" + plan.preset, device=plan.device)
    device_type = torch.device(plan.device).type
    batch = default_batch_segments(device_type) if device_type == "cuda" else 8
    threads = torch.get_num_threads()
    workers = default_encoder_workers(device_type, threads)
    if device_type == "cpu":
        torch.set_num_threads(max(1, threads // workers))
    try:
        yield encoder, batch, workers
    finally:
        torch.set_num_threads(threads)


def _bare_rate(plan: Plan, encoder, prepared, batch: int) -> float:
    """ECGs/s of the bare encoder on preprocessed segments."""
    from ecg_atlas.embedder.engine import EmbeddingEngine

    engine = EmbeddingEngine(encoder, batch_size=batch)
    engine.embed_segments(prepared[0][1])
    _sync(plan.device)()
    started = time.perf_counter()
    for _ in engine.embed_records(prepared):
        pass
    _sync(plan.device)()
    return len(prepared) / (time.perf_counter() - started)


def _batching_rate(encoder, batch: int, workers: int, items, segments_of, feeders: int) -> tuple[float, float]:
    """ECGs/s of the batching encoder fed by `feeders` threads, each turning an item into segments
    (`segments_of`) and submitting them: the server's ingest path without the network. Also this
    process's CPU ms per ECG meanwhile (feeders, encoder workers and all)."""
    from ecg_atlas.embedder.batching import BatchingEncoder

    batcher = BatchingEncoder(encoder, max_batch_segments=batch, workers=workers).start()
    try:
        batcher.warm_up(rounds=1)
        with ThreadPoolExecutor(feeders) as pool:
            cpu, started = _process_cpu_s(), time.perf_counter()
            futures = list(pool.map(lambda item: batcher.submit(segments_of(item)), items))
            for future in futures:
                future.result()
            elapsed, cpu = time.perf_counter() - started, _process_cpu_s() - cpu
    finally:
        batcher.stop()
    return len(items) / elapsed, 1000 * cpu / len(items)


def _process_cpu_s() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def _time_search(index, queries: np.ndarray, k: int, repeats: int, allowed=None) -> float:
    index.search(queries, k, allowed)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        index.search(queries, k, allowed)
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def step_search(plan: Plan, out: Results, ceiling: dict) -> None:
    import faiss

    from ecg_atlas.index.backends import FAISS_GPU_MAX_K, FaissGpuFlat, TorchExact

    rng = np.random.default_rng(0)
    n, dim = plan.search_rows, plan.search_dim
    indexes = {"torch-" + torch.device(plan.device).type: TorchExact(dim, plan.device)}
    if plan.device.startswith("cuda") and hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus():
        indexes["faiss-gpu"] = FaissGpuFlat(dim)
    else:
        out.write("search", backend="faiss-gpu", measured=False, why="this faiss has no GPU support")
    chunk = 100_000
    for start in range(0, n, chunk):
        block = rng.standard_normal((min(chunk, n - start), dim)).astype(np.float32)
        block /= np.linalg.norm(block, axis=1, keepdims=True)
        ids = np.arange(start, start + len(block), dtype=np.int64)
        for index in indexes.values():
            index.add(ids, block)
    queries = rng.standard_normal((64, dim)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    allowed = np.sort(rng.choice(n, n // 10, replace=False)).astype(np.int64)
    gone = rng.choice(n, 2039, replace=False).astype(np.int64)
    for name, index in indexes.items():
        figures = {"one_query_k10_ms": _time_search(index, queries[:1], 10, 20),
                   "64_queries_k10_ms": _time_search(index, queries, 10, 10),
                   "one_query_k10_filtered_10pct_ms": _time_search(index, queries[:1], 10, 10, allowed)}
        index.remove(gone)  # 2,039 pending deletes: k = 10 over-fetches past FAISS GPU's k limit
        figures["one_query_k10_2039_tombstones_ms"] = _time_search(index, queries[:1], 10, 10)
        figures["k_above_gpu_limit_ms"] = _time_search(index, queries[:1], FAISS_GPU_MAX_K + 1, 3)
        out.write("search", backend=name, rows=n, dim=dim, **{k: round(v, 3) for k, v in figures.items()})
    del indexes


def step_pretrain(plan: Plan, out: Results, ceiling: dict) -> None:
    from ecg_atlas.embedder.discover import find_ecgs
    from ecg_atlas.embedder.pretrain import pretrain

    sources = list(find_ecgs([SHARED / "ecg" / "cinc_cpsc2018"]))
    if plan.device == "cpu":
        sources = sources[:4]
    log_every = max(1, plan.pretrain_updates // 6)
    with tempfile.TemporaryDirectory() as tmp:
        result = pretrain(sources, tmp, preset=plan.pretrain_preset, max_updates=plan.pretrain_updates,
                          pairs_per_batch=plan.pretrain_pairs, device=plan.device, log_every=log_every,
                          save_every=10**9, random_offset=True, max_pairs_per_record=4)
    rates = [r["segments_per_s"] for r in result.history[1:]] or [r["segments_per_s"] for r in result.history]
    rate = statistics.median(rates)
    train_tflops = rate * 3 * _gflop(plan.pretrain_preset) / 1000
    out.write("pretrain", preset=plan.pretrain_preset, device=plan.device, batch_segments=2 * plan.pretrain_pairs,
              updates=result.updates, segments_per_s=round(rate, 2), train_tflops=round(train_tflops, 4),
              mfu_vs_gemm_now=round(train_tflops / ceiling["tflops"], 4) if ceiling.get("tflops") else None)


STEP_FUNCTIONS = {"setup": step_setup, "accuracy": step_accuracy, "dispatch": step_dispatch,
                  "throughput": step_throughput, "ingest": step_ingest,
                  "ingest_processes": step_ingest_processes, "search": step_search,
                  "pretrain": step_pretrain}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dry-run", action="store_true", help="every step, tiny, on the CPU")
    parser.add_argument("--only", default="", help=f"comma-separated steps ({', '.join(STEPS)})")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "gpu_bench.jsonl")
    parser.add_argument("--budget-s", type=float, default=450.0, help="steps left when it runs out are skipped")
    args = parser.parse_args(argv)
    plan = DRY_PLAN if args.dry_run else GPU_PLAN
    if not args.dry_run and not torch.cuda.is_available():
        print("torch sees no CUDA device: run with --dry-run on a CPU, or fix the set-up (make setup)",
              file=sys.stderr)
        return 2
    if plan.compile_backend != "inductor":
        torch.compile = functools.partial(torch.compile, backend=plan.compile_backend)
    steps = [s for s in (args.only.split(",") if args.only else STEPS) if s]
    unknown = set(steps) - set(STEPS)
    if unknown:
        parser.error(f"unknown steps {sorted(unknown)}; choose from {', '.join(STEPS)}")
    if "setup" not in steps:
        steps.insert(0, "setup")  # the ceiling every MFU is measured against, from this run
    out = Results(args.out, plan.device)
    out.write("run", dry_run=args.dry_run, steps=steps, plan=asdict(plan), argv=sys.argv[1:])
    deadline = time.monotonic() + args.budget_s
    ceiling: dict = {}
    failed = 0
    for step in steps:
        if time.monotonic() > deadline:
            out.write(step, skipped=True, why=f"past the {args.budget_s:.0f}-s budget")
            continue
        started = time.perf_counter()
        try:
            STEP_FUNCTIONS[step](plan, out, ceiling)
        except Exception as exc:  # recorded; the next steps still run
            failed += 1
            out.write(step, error=f"{type(exc).__name__}: {exc}")
        out.peak(step)
        out.write(step, what="step_seconds", seconds=round(time.perf_counter() - started, 2))
    out.write("done", failed_steps=failed)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
