"""Distinct embeddings of real ECGs for index benchmarks: signal-space augmentation, then the encoder.

Every usable recording of ../shared/data/ecg is preprocessed once; each output vector is one 5-s
window drawn from a random recording at a random sample offset, then augmented the way ECG
pretraining does (amplitude scale 0.8–1.25, Gaussian noise at 0.02–0.1 of the z-scored signal, a
slow baseline wander, each lead dropped with probability 0.1) and embedded by ``--encoder``
(default: the bundled encoder, the only trained one available offline). Neighbouring vectors are
therefore neighbouring *ECG windows*, not noisy copies of one vector.

    python benchmarks/real_vectors.py --n 100000 --out runs/real_bundled.npy
"""

from __future__ import annotations

import argparse
import os
import time
import warnings
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ECG_ATLAS_SHARED_DATA", REPO.parent / "shared" / "data")) / "ecg"


def standardised_records() -> list[np.ndarray]:
    from ecg_atlas.embedder.discover import find_ecgs, read_source
    from ecg_atlas.embedder.preprocessing import preprocess
    from ecg_atlas.errors import AtlasError

    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for source in find_ecgs([DATA]):
            try:
                out.append(np.concatenate(list(preprocess(read_source(source))), axis=-1))
            except AtlasError:
                continue
    return out


def augmented_windows(records: list[np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    windows = np.empty((n, 12, 2500), dtype=np.float32)
    t = np.arange(2500, dtype=np.float32) / 500.0
    for i in range(n):
        rec = records[rng.integers(len(records))]
        start = int(rng.integers(0, rec.shape[-1] - 2500 + 1))
        w = rec[:, start:start + 2500] * rng.uniform(0.8, 1.25)
        w = w + rng.normal(0, rng.uniform(0.02, 0.1), w.shape)
        wander = rng.uniform(0, 0.3) * np.sin(2 * np.pi * rng.uniform(0.05, 0.5) * t + rng.uniform(0, 2 * np.pi))
        w = w + wander[None, :]
        w = w * (rng.random(12) >= 0.1)[:, None]
        windows[i] = w
    return windows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--encoder", default="bundled")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    from ecg_atlas.embedder import load_encoder

    rng = np.random.default_rng(args.seed)
    records = standardised_records()
    encoder = load_encoder(args.encoder, device="auto")
    out = np.lib.format.open_memmap(args.out, mode="w+", dtype=np.float32, shape=(args.n, encoder.dim))
    t0 = time.perf_counter()
    for start in range(0, args.n, args.batch):
        stop = min(args.n, start + args.batch)
        out[start:stop] = encoder.embed(augmented_windows(records, stop - start, rng))
        if (start // args.batch) % 100 == 0:
            rate = stop / (time.perf_counter() - t0)
            print(f"{stop}/{args.n} windows, {rate:.0f}/s", flush=True)
    out.flush()
    print(f"wrote {args.out}: {args.n} × {encoder.dim} from {len(records)} recordings with {encoder.model_id} "
          f"in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
