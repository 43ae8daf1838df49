"""Fine-tuning on PTB-XL: frozen probe vs fine-tuned, for the bundled encoder and its random-init twin.

Data: ../shared/data/ptbxl (1,579 real records, folds 1-8 train, fold 9 validation), the five
diagnostic superclasses NORM, MI, STTC, CD, HYP as a multi-label task, read and cut into windows by
``ecg_atlas.finetune.sources`` exactly as ``ecg-atlas finetune`` does. For each encoder (the bundled
one, then ``random_twin(0)``: same architecture, random weights):

* **frozen probe**: its record vectors under the probes' linear model (train on folds 1-8, C chosen
  on fold 9), fold-9 macro AUROC with a patient-bootstrap 95 % CI;
* **fine-tuned**: ``finetune.train.train`` with the family's default recipe for ``--minutes``
  (early stopping on fold 9 as in the product), then fold-9 record-level macro AUROC with its CI,
  and the paired verdict of ``finetune.evaluate``;
* **throughput**: ``train()``'s training windows/s as a ratio to a bare PyTorch loop over the same
  network, batch and optimizer (no sampler, events, validation or checkpoints), the bare loop
  measured in the same run just before and just after the fine-tune. Both are cut into windows of
  ``--window`` updates (train()'s from its "step" events) and compared by their medians, which a
  machine shared with other jobs disturbs less than whole-run means (both are printed).

    python benchmarks/finetune.py [--minutes 4] [--limit 600] [--batch-size 32] [--device auto] [--json OUT]

``--limit N`` keeps the first N training records of folds 1-8 (all of fold 9 stays), to bound the
embedding and reading time on a small machine.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ECG_ATLAS_SHARED_DATA", REPO.parent / "shared" / "data")) / "ptbxl"
sys.path.insert(0, str(REPO))

LABELS = ("NORM", "MI", "STTC", "CD", "HYP")


def limited_manifest(limit: int | None, folder: Path) -> Path:
    """The PTB-XL manifest, or a copy keeping the first `limit` training rows (folds 1-8) and all of fold 9."""
    source = DATA / "manifest.csv"
    if not limit:
        return source
    with open(source, newline="") as f:
        rows = list(csv.DictReader(f))
    train = [r for r in rows if int(r["strat_fold"]) <= 8][:limit]
    val = [r for r in rows if int(r["strat_fold"]) == 9]
    path = folder / "manifest.csv"
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(train + val)
    return path


def bare_loop(data, base, *, batch_size: int, updates: int, window: int, device: torch.device,
              seed: int = 0) -> list[float]:
    """Training windows/s of the plainest loop over the same network, batch and optimizer, one
    figure per `window` updates (after two warm-up updates)."""
    torch.manual_seed(seed)
    network = base.trainable().to(device).train()
    head = torch.nn.Linear(network.dim, data.n_outputs).to(device)
    lr, wd = float(network.recipe["lr"]), float(network.recipe["weight_decay"])
    optimizer = network.optimizer(network.param_groups(lr, wd) + [{"params": list(head.parameters()), "lr": lr,
                                                                    "weight_decay": wd}])
    train = data.segments_in("train")
    y = np.nan_to_num(data.y[data.segment_record[train]])
    pos = y.sum(axis=0)
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor((len(y) - pos) / np.maximum(pos, 1),
                                                                 dtype=torch.float32, device=device))
    rng = np.random.default_rng(seed)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else None
    warm, rates, started = 2, [], 0.0
    for step in range(warm + updates):
        if step >= warm and (step - warm) % window == 0:
            if device.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            if step > warm:
                rates.append(window * batch_size / (now - started))
            started = now
        pick = np.sort(rng.choice(len(train), size=batch_size, replace=False))
        x = torch.from_numpy(data.segments[train[pick]]).to(device)
        target = torch.from_numpy(y[pick]).to(device)
        if autocast is not None:
            with autocast:
                logits = head(network(x)).float()
        else:
            logits = head(network(x))
        loss = loss_fn(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    if updates % window == 0:
        rates.append(window * batch_size / (time.perf_counter() - started))
    return rates


def windowed_rates(steps: list[dict], batch_size: int) -> list[float]:
    """Windows/s between consecutive "step" events of train(): each carries the run's windows per
    second of training time so far, so the training time at an event is windows / that rate."""
    points = [(0.0, 0.0)] + [(e["update"] * batch_size, e["update"] * batch_size / e["segments_per_s"])
                             for e in steps if e.get("segments_per_s")]
    return [(n1 - n0) / (t1 - t0) for (n0, t0), (n1, t1) in zip(points, points[1:]) if t1 > t0]


def _span(rates: list[float]) -> str:
    return f"{min(rates):.2f}-{max(rates):.2f}" if rates else "n/a"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=4.0, help="fine-tuning budget per encoder")
    ap.add_argument("--limit", type=int, default=None, help="first N training records of folds 1-8")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--bare-updates", type=int, default=16, help="timed updates of each bare-loop measurement")
    ap.add_argument("--window", type=int, default=4, help="updates per throughput figure (train() and bare loop)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = ap.parse_args()

    from ecg_atlas.embedder import load_encoder
    from ecg_atlas.embedder.encoders.base import resolve_device
    from ecg_atlas.finetune.evaluate import (
        measure,
        paired_macro_difference,
        probe_scores,
        record_vectors,
        verdict_line,
    )
    from ecg_atlas.finetune.sources import Selection, from_files, one_hot
    from ecg_atlas.finetune.train import TrainConfig, predict_records, train

    device = resolve_device(args.device)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}", flush=True)
    bundled = load_encoder("bundled", device=str(device))
    selection = Selection(LABELS, train="strat_fold <= 8", val="strat_fold = 9")
    results = {"machine": {"processor": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                           "torch": torch.__version__, "device": str(device)},
               "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}, "encoders": []}
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        data, intake = from_files([DATA], limited_manifest(args.limit, Path(tmp)), "record", bundled, selection)
        results["data"] = {"records": intake.records, "segments": intake.segments, "refused": intake.refused,
                           "seconds": round(time.perf_counter() - started, 1)}
        print(f"data: {intake.records} records, {intake.segments} windows, read in "
              f"{results['data']['seconds']} s", flush=True)
        val = data.records_in("val")
        common = dict(min_positives=10, n_bootstrap=args.bootstrap, seed=0)
        for base in (bundled, bundled.random_twin(seed=0)):
            row = {"encoder": base.model_id}
            t = time.perf_counter()
            _, scores = probe_scores(record_vectors(base, data), data, ["val"])
            probe = measure(data, "val", scores["val"], **common)
            row["frozen_probe"] = probe.to_dict()["macro"]
            row["frozen_probe_seconds"] = round(time.perf_counter() - t, 1)
            print(f"{base.model_id}: frozen probe fold-9 macro AUROC {probe.macro_auroc} "
                  f"({row['frozen_probe_seconds']} s)", flush=True)
            bare = dict(batch_size=args.batch_size, updates=args.bare_updates, window=args.window, device=device)
            bare_before = bare_loop(data, base, **bare)
            config = TrainConfig(epochs=100, minutes=args.minutes, batch_size=args.batch_size, device=str(device),
                                 log_every=args.window)
            steps: list[dict] = []
            t = time.perf_counter()
            result = train(data, base.trainable(), config, Path(tmp) / base.model_id, on_event=steps.append)
            steps = [e for e in steps if e["event"] == "step"]
            wall = time.perf_counter() - t
            bare_after = bare_loop(data, base, **bare)
            trained = windowed_rates(steps, args.batch_size)
            finetuned = predict_records(result.network, result.head, data, "val", task=data.task, device=device)
            fine = measure(data, "val", finetuned, **common)
            columns = [list(data.labels).index(label) for label in fine.macro_labels]
            diff = paired_macro_difference(one_hot(data, val), finetuned, scores["val"], data.groups[val], columns,
                                           n_resamples=args.bootstrap, seed=0)
            reference = statistics.median(bare_before + bare_after)
            row.update({"finetuned": fine.to_dict()["macro"], "verdict": verdict_line(fine, probe, diff),
                        "wall_seconds": round(wall, 1), "updates": result.updates, "stopped": result.stopped,
                        "best_epoch": result.best_epoch, "train_windows_per_s": round(result.segments_per_s, 2),
                        "train_windows_per_s_windows": [round(r, 2) for r in trained],
                        "bare_windows_per_s_before": [round(r, 2) for r in bare_before],
                        "bare_windows_per_s_after": [round(r, 2) for r in bare_after],
                        "throughput_ratio_median": round(statistics.median(trained) / reference, 3)
                        if trained else None,
                        "throughput_ratio_whole_run": round(result.segments_per_s / reference, 3)})
            print(f"{base.model_id}: fine-tuned fold-9 macro AUROC {fine.macro_auroc} after {result.updates} updates "
                  f"({result.stopped}, best epoch {result.best_epoch}) in {wall:.0f} s", flush=True)
            print(f"  {row['verdict']}", flush=True)
            print(f"  training: median {statistics.median(trained) if trained else float('nan'):.2f} windows/s over "
                  f"{len(trained)} windows of {args.window} updates (whole run {result.segments_per_s:.2f}); bare "
                  f"loop: median {reference:.2f} over {len(bare_before) + len(bare_after)} windows (before "
                  f"{_span(bare_before)}, after {_span(bare_after)}); ratio {row['throughput_ratio_median']}x "
                  f"(whole run {row['throughput_ratio_whole_run']}x)", flush=True)
            results["encoders"].append(row)
    if args.json:
        from ecg_atlas.jsonable import jsonable

        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(jsonable(results), indent=1))


if __name__ == "__main__":
    main()
