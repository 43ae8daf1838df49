"""How the bundled encoders ecg-atlas-small-v2 and -v3 are made from the shared data
(``make bundled-encoder-v2``, ``make bundled-encoder`` for v3).

Three steps, each seeded and each a command of its own so a run can be inspected between them:

1. ``manifest``: one training manifest over both data sets (``../shared/data/ptbxl`` and
   ``../shared/data/ecg``) with the five PTB-XL diagnostic superclasses as 0/1 columns, the sample
   set's four other label groups (``OTHER_GROUPS``: rhythm, ectopy, axis/voltage; 0/1 for its labelled
   ECGs, empty = unknown for PTB-XL, whose shared copy carries superclasses only) and a ``part``
   column naming each record's role:

   * ``train``: PTB-XL folds 1–7, and the ECGs of ../shared/data/ecg whose patients fall in its
     *train* split (``pretrain.data.patient_split``, the split v1 was pretrained on) and that carry
     diagnostic labels (``label_groups``; NSR counts as NORM);
   * ``val``: PTB-XL fold 8, the only data any choice (early stopping, the best epoch) looks at;
   * ``test``: PTB-XL fold 9, reported by the fine-tuning run but never used to choose anything.

   The test-split patients of ../shared/data/ecg are not in the manifest at all: they are the
   held-out split of ``make encoder-quality``. PTB-XL fold 10 is not in shared/.
2. ``ecg-atlas finetune`` from ``bundled:v1`` on that manifest (the Makefile holds the commands): v2
   on the five superclasses, v3 on those and ``OTHER_GROUPS``. The other groups have no validation
   records (every labelled sample ECG of the train split trains), so v3's run takes
   ``--min-positives 0`` and its early stopping sees the five superclasses on fold 8 only (a label
   with no known value in val is left out of the val macro).
3. ``release``: the fine-tuned encoder's weights written back into v1's file layout (the
   fairseq-signals pretraining layout, pretraining heads kept so ``pretrain --init`` still works),
   the classifier head dropped: the bundled encoder is an encoder, its probes are the user's.
"""

from __future__ import annotations

import argparse
import csv
import os
from pathlib import Path

from ecg_atlas.atomic import write_atomic
from ecg_atlas.errors import CheckpointError

from .pretrain.data import patient_split
from .pretrain.export import read_payload, run_release, write_release

SUPERCLASSES = ("NORM", "MI", "STTC", "CD", "HYP")
#: label_groups of ../shared/data/ecg that count as each superclass
GROUP_ALIASES = {"NORM": ("NORM", "NSR")}
#: the other label groups of ../shared/data/ecg: v3's extra targets (unknown for PTB-XL)
OTHER_GROUPS = ("AF_AFL", "RHYTHM_OTHER", "ECTOPY", "AXIS_VOLT_OTHER")
TRAIN_FOLDS, VAL_FOLD, TEST_FOLD = range(1, 8), 8, 9
COLUMNS = ("record", "patient", "dataset", "part", *SUPERCLASSES, *OTHER_GROUPS)


def ptbxl_rows(manifest: Path) -> list[dict]:
    out = []
    for row in csv.DictReader(open(manifest, newline="")):
        fold = int(row["strat_fold"])
        part = "train" if fold in TRAIN_FOLDS else "val" if fold == VAL_FOLD else "test" if fold == TEST_FOLD else ""
        if not part:
            continue
        out.append({"record": row["record"], "patient": row["patient_id"] or f"ptbxl-record:{row['record']}",
                    "dataset": "ptbxl", "part": part, **{c: row[c] for c in SUPERCLASSES},
                    **{g: "" for g in OTHER_GROUPS}})
    return out


def ecg_rows(manifest: Path) -> list[dict]:
    """The labelled train-split ECGs of ../shared/data/ecg (their test split stays out)."""
    out = []
    for row in csv.DictReader(open(manifest, newline="")):
        patient = row["patient_id"] or row["record"]
        if patient_split(patient) != "train" or not row["label_groups"]:
            continue
        groups = set(row["label_groups"].split(";"))
        labels = {c: str(int(bool(groups & set(GROUP_ALIASES.get(c, (c,)))))) for c in SUPERCLASSES}
        labels.update({g: str(int(g in groups)) for g in OTHER_GROUPS})
        out.append({"record": row["record"], "patient": patient, "dataset": row["dataset"], "part": "train",
                    **labels})
    return out


def write_manifest(ptbxl: Path, ecg: Path, out: Path) -> dict[str, int]:
    """Write the combined manifest; returns records per part."""
    rows = ptbxl_rows(ptbxl / "manifest.csv") + ecg_rows(ecg / "manifest.csv")
    ids = [r["record"] for r in rows]
    if len(set(ids)) != len(ids):
        raise ValueError("record ids of the two data sets collide")
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    write_atomic(out, write)
    counts: dict[str, int] = {}
    for r in rows:
        key = f"{r['part']} ({'ptbxl' if r['dataset'] == 'ptbxl' else 'ecg'})"
        counts[key] = counts.get(key, 0) + 1
    return counts


def release(finetuned: str | os.PathLike, base: str | os.PathLike, dst: str | os.PathLike, *, name: str,
            notes: dict | None = None) -> str:
    """Write ``dst``: ``base`` (a pretraining-layout release, v1) with its encoder weights replaced by
    those of ``finetuned`` (``ecg-atlas finetune``'s model.pt); returns the new file's sha256."""
    tuned = read_payload(finetuned, "`ecg-atlas finetune` model.pt", ("weights", "meta"))
    payload = read_payload(base, "pretraining-layout release", ("cfg", "model"))
    state = {k[len("encoder."):]: v for k, v in tuned["weights"]["model"].items() if k.startswith("encoder.")}
    model = payload["model"]
    missing = sorted(set(model) - set(state) - _PRETRAINING_ONLY(model))
    unknown = sorted(set(state) - set(model))
    if missing or unknown:
        raise CheckpointError(f"{finetuned} does not match {base}'s layout: missing {missing[:5]}, "
                              f"unexpected {unknown[:5]}")
    for key, value in state.items():
        if model[key].shape != value.shape:
            raise CheckpointError(f"{key}: shape {tuple(value.shape)} in {finetuned}, {tuple(model[key].shape)} "
                                  f"in {base}")
        model[key] = value.to(model[key].dtype)
    base_name = payload.get("extra_state", {}).get("ecg_atlas_release", {}).get("name")
    finetuned_meta = {k: tuned["meta"].get(k) for k in ("name", "labels", "data_digest")}
    return write_release(payload, dst, name=name, notes={"base": base_name, "finetuned": finetuned_meta,
                                                         **(notes or {})})


def _PRETRAINING_ONLY(model: dict) -> set[str]:
    """Keys of the pretraining layout that fine-tuning neither has nor changes (kept from the base)."""
    heads = ("mask_emb", "quantizer.", "project_q.", "final_proj.")
    return {k for k in model if k.startswith(heads)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="step", required=True)
    m = sub.add_parser("manifest", help="write the combined training manifest")
    m.add_argument("--ptbxl", type=Path, required=True)
    m.add_argument("--ecg", type=Path, required=True)
    m.add_argument("--out", type=Path, required=True)
    r = sub.add_parser("release", help="write the release file from a fine-tuning run's model.pt")
    r.add_argument("finetuned", type=Path)
    r.add_argument("base", type=Path, help="the v1 release file (pretraining layout)")
    r.add_argument("dst", type=Path)
    r.add_argument("--name", required=True)
    r.add_argument("--recipe", default=None)
    args = ap.parse_args(argv)
    if args.step == "manifest":
        counts = write_manifest(args.ptbxl, args.ecg, args.out)
        print(f"wrote {args.out}: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
        return 0
    return run_release(lambda: release(args.finetuned, args.base, args.dst, name=args.name,
                                       notes={"recipe": args.recipe} if args.recipe else None), args.dst)


if __name__ == "__main__":
    raise SystemExit(main())
