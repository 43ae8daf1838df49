"""Pretraining throughput: training segments/s of `ecg-atlas pretrain`'s own loop on real ECG pairs.

The reference measured in the same run is the machine's dense GEMM rate (fp32 on CPU, bf16 on CUDA),
so the figure also reads as a utilisation: training FLOPs (3 × the forward FLOPs of a segment) ×
segments/s ÷ that rate. On CUDA the MFU against the H100 datasheet's dense bf16 rate is printed too.
Data: pairs of adjacent 5-s windows of the train-split ECGs in ../shared/data/ecg, streamed by the
trainer's PairStream; the first logging windows (reading, preprocessing and caching the corpus) are
left out of the median.

    python benchmarks/pretrain.py [--config small] [--batch-pairs 16] [--updates 60] [--device auto]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ECG_ATLAS_SHARED_DATA", REPO.parent / "shared" / "data")) / "ecg"
sys.path.insert(0, str(Path(__file__).resolve().parent))

from encoder import H100_BF16_DENSE_TFLOPS, gemm_gflops  # the encoder benchmark's ceiling


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="small", choices=["tiny", "small", "base"])
    ap.add_argument("--batch-pairs", type=int, default=16)
    ap.add_argument("--updates", type=int, default=60)
    ap.add_argument("--log-every", type=int, default=5)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()

    from ecg_atlas.cli.pretrain import select_split
    from ecg_atlas.embedder.discover import find_ecgs
    from ecg_atlas.embedder.encoders.base import resolve_device
    from ecg_atlas.embedder.model import PRESETS, flops_per_segment
    from ecg_atlas.embedder.pretrain import pretrain

    device = resolve_device(args.device)
    sources = select_split(list(find_ecgs([DATA])), DATA / "manifest.csv", "train")
    train_gflop = 3 * flops_per_segment(PRESETS[args.config]) / 1e9
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}")
    ceiling = gemm_gflops(device.type, torch.bfloat16 if device.type == "cuda" else torch.float32)
    with tempfile.TemporaryDirectory() as tmp:
        result = pretrain(sources, tmp, preset=args.config, max_updates=args.updates,
                          pairs_per_batch=args.batch_pairs, device=args.device, log_every=args.log_every,
                          random_offset=True, max_pairs_per_record=4, save_every=10**9)
    rates = [r["segments_per_s"] for r in result.history[2:]] or [r["segments_per_s"] for r in result.history]
    rate = statistics.median(rates)
    print(f"{args.config}: {len(sources)} train-split ECGs, batch {2 * args.batch_pairs} segments, "
          f"{train_gflop:.2f} training GFLOP per segment")
    print(f"training throughput: {rate:.1f} segments/s (median of {len(rates)} windows of {args.log_every} "
          f"updates; range {min(rates):.1f}–{max(rates):.1f})")
    print(f"dense GEMM rate measured now: {ceiling:.1f} GFLOP/s; training at {rate * train_gflop:.1f} GFLOP/s = "
          f"{rate * train_gflop / ceiling:.0%} of it")
    if device.type == "cuda":
        print(f"MFU vs the H100's dense bf16 {H100_BF16_DENSE_TFLOPS:.0f} TFLOP/s: "
              f"{rate * train_gflop / (H100_BF16_DENSE_TFLOPS * 1e3):.1%}")


if __name__ == "__main__":
    main()
