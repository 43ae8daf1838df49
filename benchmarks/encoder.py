"""Encoder throughput and checkpoint-loading memory (figures for BENCHMARKS.md; never in tests).

    python benchmarks/encoder.py                 # CPU throughput, fast modes, loading memory
    python benchmarks/encoder.py --only load     # one part: throughput | fast | gpu | load

Every figure is printed with its reference from the same run:
* throughput: ratio to the reference implementation's segments/s measured on this machine class
  (issue 2: 4.7 / 5.4 / 4.7 at batch 1 / 8 / 32, fp32 eager, 2 threads) and fraction of this
  machine's fp32 GEMM rate measured just before (the hardware ceiling for a GEMM-bound network);
* fast CPU modes: speed-up over our fp32 eager run and cosine of their embeddings to fp32 on
  real ECG segments from ../shared/data/ecg;
* GPU (when present): segments/s, MFU against the bf16 dense peak, cosine to fp32;
* loading memory: peak RSS growth while loading a full-size checkpoint file with Adam state
  (built from full_config_state_dict_keys.json) over the bytes of the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("ECG_ATLAS_SHARED_DATA", REPO.parent / "shared" / "data"))
REFERENCE_SEG_PER_S = {1: 4.7, 8: 5.4, 32: 4.7}  # reference implementation, this machine class
H100_BF16_DENSE_TFLOPS = 989.0  # SXM datasheet; MFU reference


def _base_gflop() -> float:
    from ecg_atlas.embedder.model import PRESETS, flops_per_segment

    return flops_per_segment(PRESETS["base"]) / 1e9  # 29.2 for 12 × 2500 (the figure)


GFLOP_PER_SEGMENT = _base_gflop()


def real_segments(n: int) -> np.ndarray:
    """``n`` preprocessed 5-s segments of real 12-lead ECGs (repeated if the corpus has fewer)."""
    from ecg_atlas.embedder.discover import find_ecgs, read_source
    from ecg_atlas.embedder.preprocessing import preprocess

    out = []
    for source in find_ecgs([SHARED / "ecg" / "cinc_georgia", SHARED / "ecg" / "cinc_cpsc2018",
                             SHARED / "ecg" / "cinc_ptbxl"]):
        try:
            out.extend(preprocess(read_source(source)))
        except ValueError:
            continue
        if len(out) >= n:
            break
    reps = -(-n // len(out))
    return np.stack((out * reps)[:n]).astype(np.float32)


def time_embed(embed, x: np.ndarray, batch: int, seconds: float) -> float:
    """Segments/s of ``embed`` on batches of ``batch`` (one warm-up call, then ≥ ``seconds``)."""
    chunk = x[:batch]
    embed(chunk)
    done, start = 0, time.perf_counter()
    while True:
        embed(chunk)
        done += batch
        elapsed = time.perf_counter() - start
        if elapsed >= seconds and done >= 3 * batch:
            return done / elapsed


GEMM_SHAPES = ((156 * 8, 768, 3072), (156 * 8, 3072, 768), (2048, 2048, 2048))


def gemm_gflops(device: str = "cpu", dtype=torch.float32, seconds: float = 1.0, repeats: int = 3) -> float:
    """This machine's best dense GEMM rate now: the max over the encoder's FFN shapes and a large
    square product, each timed ``repeats`` times (the hardware ceiling for a GEMM-bound network)."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    best = 0.0
    for m, k, n in GEMM_SHAPES:
        a = torch.randn(m, k, device=device, dtype=dtype)
        b = torch.randn(k, n, device=device, dtype=dtype)
        for _ in range(3):
            a @ b
        for _ in range(repeats):
            sync()
            count, start = 0, time.perf_counter()
            while time.perf_counter() - start < seconds:
                a @ b
                count += 1
            sync()
            best = max(best, count * 2 * m * k * n / (time.perf_counter() - start) / 1e9)
    return best


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return (a * b).sum(axis=1)


def bench_throughput(args) -> None:
    from ecg_atlas.embedder import random_encoder

    torch.set_num_threads(args.threads)
    x = real_segments(32)
    ceiling = gemm_gflops()
    print(f"\n== CPU fp32 eager, full-size architecture (random weights), {args.threads} threads ==")
    print(f"fp32 GEMM ceiling measured now: {ceiling:.1f} GFLOP/s "
          f"(= {ceiling / GFLOP_PER_SEGMENT:.2f} segments/s if the whole network ran at GEMM speed)")
    enc = random_encoder("base")
    for batch in (1, 8, 32):
        rate = time_embed(enc.embed, x, batch, args.seconds)
        ref = REFERENCE_SEG_PER_S[batch]
        print(f"batch {batch:>2}: {rate:5.2f} segments/s | {rate / ref:.2f}x reference ({ref}) | "
              f"{rate * GFLOP_PER_SEGMENT / ceiling:.0%} of GEMM ceiling")


def bench_fast(args) -> None:
    from ecg_atlas.embedder import random_encoder

    torch.set_num_threads(args.threads)
    x = real_segments(64)
    batch = 8
    base = random_encoder("base")
    ref_vectors = np.concatenate([base.embed(x[i:i + batch]) for i in range(0, len(x), batch)])
    base_rate = time_embed(base.embed, x, batch, args.seconds)
    print(f"\n== opt-in fast CPU modes, batch {batch}, {args.threads} threads, cosine on {len(x)} real segments ==")
    print(f"fp32 eager (reference in this run): {base_rate:.2f} segments/s")
    for mode in args.fast_modes.split(","):
        enc = random_encoder("base", fast=mode)
        t0 = time.perf_counter()
        vectors = np.concatenate([enc.embed(x[i:i + batch]) for i in range(0, len(x), batch)])
        first = time.perf_counter() - t0
        rate = time_embed(enc.embed, x, batch, args.seconds)
        cos = cosine(vectors, ref_vectors)
        print(f"{mode:>8}: {rate:5.2f} segments/s | {rate / base_rate:.2f}x fp32 eager | "
              f"{rate / REFERENCE_SEG_PER_S[8]:.2f}x reference | cosine to fp32 min {cos.min():.5f} "
              f"mean {cos.mean():.5f} | first pass incl. preparation {first:.1f} s")


def bench_gpu(args) -> None:
    if not torch.cuda.is_available():
        print("\n== GPU: not measured (torch sees no CUDA device on this machine) ==")
        return
    from ecg_atlas.embedder import random_encoder

    x = real_segments(512)
    name = torch.cuda.get_device_name()
    print(f"\n== GPU: {name} ==")
    ceiling = gemm_gflops("cuda", torch.bfloat16)
    print(f"bf16 GEMM measured now: {ceiling / 1000:.0f} TFLOP/s (datasheet dense {H100_BF16_DENSE_TFLOPS:.0f})")
    fp32 = random_encoder("base", device="cuda")
    ref = fp32.embed(x[:256])
    for dtype in ("float32", "bfloat16"):
        enc = random_encoder("base", device="cuda", dtype=dtype)
        for batch in (64, 256, 512):
            xt = torch.from_numpy(x[:batch]).cuda()

            def run(chunk, enc=enc):
                out = enc.embed(chunk)
                torch.cuda.synchronize()
                return out
            rate = time_embed(run, xt, batch, args.seconds)
            tflops = rate * GFLOP_PER_SEGMENT / 1000
            print(f"{dtype:>8} batch {batch:>3}: {rate:8.0f} segments/s | {tflops:.0f} TFLOP/s | "
                  f"MFU {tflops / H100_BF16_DENSE_TFLOPS:.1%} of bf16 dense peak")
        cos = cosine(enc.embed(x[:256]), ref)
        print(f"{dtype:>8} cosine to fp32: min {cos.min():.6f}")


def build_full_size_checkpoint(path: Path) -> int:
    """A file shaped like the released pretrained one: weights + Adam state. Returns weight bytes."""
    keys = json.loads((SHARED / "parity" / "full_config_state_dict_keys.json").read_text())
    shapes = keys["pretrained_wav2vec2_cmsc_base"]["keys"]
    gen = torch.Generator().manual_seed(0)
    model = {k: torch.randn(s, generator=gen) * 0.02 for k, s in shapes.items()}
    state = {i: {"exp_avg": torch.zeros_like(t), "exp_avg_sq": torch.zeros_like(t)}
             for i, t in enumerate(model.values())}
    cfg_model = {"_name": "wav2vec2_cmsc", "encoder_layers": 12, "encoder_embed_dim": 768,
                 "encoder_ffn_embed_dim": 3072, "encoder_attention_heads": 12,
                 "conv_feature_layers": "[(256, 2, 2)] * 4", "conv_pos": 128, "conv_pos_groups": 16,
                 "in_d": 12, "conv_bias": False, "extractor_mode": "default", "layer_norm_first": False}
    torch.save({"args": None, "cfg": {"model": cfg_model}, "model": model, "criterion": None,
                "optimizer_history": [], "task_state": {}, "extra_state": {},
                "last_optimizer_state": {"state": state, "param_groups": [{"lr": 5e-5}]}}, path)
    return sum(t.numel() * 4 for t in model.values())


MEASURE_LOAD = """
import sys, resource
import torch
from ecg_atlas.embedder import load_encoder
def status(field):
    for line in open('/proc/self/status'):
        if line.startswith(field):
            return int(line.split()[1]) * 1024
x = torch.randn(1, 12, 2500)
before = status('VmRSS:')
enc = load_encoder(sys.argv[1])
loaded_peak = status('VmHWM:')
enc.embed(x)  # pages every weight in: the honest "loaded and usable" figure
print(before, loaded_peak, status('VmHWM:'), status('VmRSS:'), enc.dim)
"""


def bench_load(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "full_size_with_adam.pt"
        weight_bytes = build_full_size_checkpoint(path)
        size = path.stat().st_size
        out = subprocess.run([sys.executable, "-c", MEASURE_LOAD, str(path)], capture_output=True,
                             text=True, check=True)
        before, loaded_peak, peak, after, dim = (int(v) for v in out.stdout.split())
    print(f"\n== loading a full-size checkpoint with Adam state ({size / 1e9:.2f} GB file, "
          f"{weight_bytes / 1e6:.0f} MB of weights) ==")
    print(f"peak RSS growth, load only (weights memory-mapped, not yet paged in): "
          f"{(loaded_peak - before) / 1e6:.0f} MB = {(loaded_peak - before) / weight_bytes:.2f}x the weights")
    print(f"peak RSS growth, load + first 1-segment inference (all weights resident): "
          f"{(peak - before) / 1e6:.0f} MB = {(peak - before) / weight_bytes:.2f}x the weights (goal <= 1.5x); "
          f"RSS after: +{(after - before) / 1e6:.0f} MB; dim {dim}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=["throughput", "fast", "gpu", "load"], help="run one part")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0, help="timing window per figure")
    parser.add_argument("--fast-modes", default="int8,compile", help="comma-separated fast CPU modes")
    args = parser.parse_args()
    parts = {"throughput": bench_throughput, "fast": bench_fast, "gpu": bench_gpu, "load": bench_load}
    print(f"machine: {os.cpu_count()} CPUs, torch {torch.__version__}, python {sys.version.split()[0]}")
    for name, fn in parts.items():
        if args.only in (None, name):
            fn(args)


if __name__ == "__main__":
    main()
