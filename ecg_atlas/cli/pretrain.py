"""`ecg-atlas pretrain DATA... --config small`: ECG-FM pretraining (W2V + CMSC + RLM) on your ECGs."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

from ecg_atlas.errors import AtlasError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pretrain", help="pretrain (or continue pretraining) an ECG-FM-architecture encoder",
                       description=__doc__)
    p.add_argument("paths", nargs="+", type=Path, help="ECG files or directories (searched recursively)")
    p.add_argument("--out", required=True, type=Path, help="run directory: checkpoint_last.pt, loss_curves.png")
    p.add_argument("--config", default="small", choices=["tiny", "small", "base"],
                   help="architecture for a new model (base = ECG-FM's released shape)")
    p.add_argument("--init", default=None, help="continue pretraining from this checkpoint (e.g. ECG-FM's .pt)")
    p.add_argument("--resume", action="store_true", help="resume from OUT/checkpoint_last.pt if it exists")
    p.add_argument("--max-updates", type=int, default=1000,
                   help="updates to run (with --resume: the run's total, so an interrupted run finishes its plan)")
    p.add_argument("--minutes", type=float, default=None, help="stop after this much wall time")
    p.add_argument("--batch-pairs", type=int, default=16, help="pairs of adjacent 5-s segments per update")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (bf16 autocast on cuda)")
    p.add_argument("--noise", type=float, default=0.0, help="Gaussian noise std added to z-scored inputs")
    p.add_argument("--random-offset", action="store_true",
                   help="augmentation: pairs of long records start at a random sample")
    p.add_argument("--manifest", type=Path, default=None,
                   help="CSV with `record` and `patient_id` columns: with --split, keeps only that split's patients")
    p.add_argument("--split", choices=["train", "test", "all"], default="all",
                   help="patient split to train on (stable hash of the patient id; see pretrain.data)")
    p.add_argument("--lr", type=float, default=None,
                   help="override the recipe's fixed 5e-5 (tuned for 1024-segment batches; small runs need more)")
    p.add_argument("--warmup", type=int, default=0, help="linear learning-rate warm-up over this many updates")
    p.add_argument("--max-pairs-per-record", type=int, default=None,
                   help="cap on the pairs one record gives per pass (long Holter records would dominate)")
    p.add_argument("--save-every", type=int, default=200)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", action="store_true", help="print a machine-readable summary")
    p.set_defaults(func=run)


def select_split(sources, manifest: Path | None, split: str):
    from ecg_atlas.embedder.pretrain.data import patient_split

    if split == "all":
        return sources
    if manifest is None:
        raise AtlasError("--split needs --manifest (a CSV with record and patient_id columns)")
    with open(manifest, newline="") as fh:
        patients = {row["record"]: (row.get("patient_id") or row["record"]) for row in csv.DictReader(fh)}
    return [s for s in sources if patient_split(patients.get(s.ecg_id, s.ecg_id)) == split]


def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ecg_atlas.embedder.discover import find_ecgs
    from ecg_atlas.embedder.pretrain import pretrain

    sources = select_split(list(find_ecgs(args.paths)), args.manifest, args.split)
    if not sources:
        raise AtlasError("no ECG files to pretrain on")
    with tqdm(total=args.max_updates, unit="update", desc="pretraining", disable=None) as bar:
        def progress(row: dict) -> None:
            if bar.disable:  # not a terminal (a log file, CI): one line per logged update instead
                print(f"update {row['update']}: loss {row['loss']:.3f} (infonce {row['infonce']:.3f}, "
                      f"cmsc {row['cmsc']:.3f}), masked-step accuracy {row['accuracy']:.3f}, "
                      f"{row['segments_per_s']:.1f} segments/s", flush=True)
                return
            bar.n = row["update"]
            bar.set_postfix(loss=f"{row['loss']:.3f}", acc=f"{row['accuracy']:.2f}",
                            seg_s=f"{row['segments_per_s']:.1f}")
            bar.refresh()

        result = pretrain(sources, args.out, preset=args.config, init=args.init, resume=args.resume,
                          max_updates=args.max_updates, max_minutes=args.minutes,
                          pairs_per_batch=args.batch_pairs, device=args.device, seed=args.seed,
                          save_every=args.save_every, noise_std=args.noise, random_offset=args.random_offset,
                          max_pairs_per_record=args.max_pairs_per_record, warmup_updates=args.warmup,
                          overrides={"lr": args.lr} if args.lr else None, on_update=progress)
    summary = {"checkpoint": str(result.checkpoint), "loss_curves": str(result.curve), "updates": result.updates,
               "seconds": round(result.seconds, 1), "segments_per_s": round(result.segments_per_s, 2),
               "records": len(sources), "skipped_records": result.skipped,
               "last": result.history[-1] if result.history else None}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"{result.updates} updates in {result.seconds / 60:.1f} min ({result.segments_per_s:.1f} segments/s); "
              f"checkpoint {result.checkpoint}; curves {result.curve}")
    return 0
