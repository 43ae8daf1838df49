"""Encoder quality on a patient-disjoint test split of ../shared/data/ecg (the bundled encoder's card).

For each encoder (default: the bundled one and two random-init encoders of the same architecture):

* **linear probes** (the package's own ``analysis.probe``: L2 logistic regression, C picked on a
  validation slice of the training patients) for four labels — atrial fibrillation/flutter
  (``label_groups`` ∋ AF_AFL), sinus rhythm/normal (∋ NORM or NSR), conduction disturbance (∋ CD)
  and male sex — trained on the *train*-split patients, measured on the *test*-split patients, with
  95 % patient-bootstrap intervals. The macro AUROC averages the four.
* **label-based retrieval precision@5**: each labelled test ECG queries the train-split gallery by
  cosine similarity; the score is the fraction of its 5 neighbours that share the label (for sex:
  the same sex), beside the chance level (the label's share of the gallery).

A secondary, lower-variance figure: the same probe under 5-fold-by-patient cross-validation over
every ECG of the corpus (train- and test-split). For the bundled encoder this includes ECGs it saw,
unlabelled, in pretraining; the primary figure above is the one free of that.

Beside them, a **small supervised baseline**: a 4-layer 1-D CNN (≈ 0.1 M parameters) trained from
scratch on the same training patients' labelled 5-s segments (masked BCE, best epoch on the same
validation slice), scored per record as the mean of its segments' logits.

The split is ``ecg_atlas.embedder.pretrain.data.patient_split`` (stable hash of the manifest's
``patient_id``, else the record): the bundled encoder was pretrained on the train split only, so no
test-split patient was seen in pretraining, probing or baseline training.

    python benchmarks/encoder_quality.py [--encoder bundled --encoder random:small ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
DATA = Path(os.environ.get("ECG_ATLAS_SHARED_DATA", REPO.parent / "shared" / "data")) / "ecg"
LABELS = ["AF/flutter", "sinus/normal", "conduction disturbance", "male sex"]
K = 5


@dataclass
class Cohort:
    ecg_ids: list[str]
    groups: np.ndarray  # patient key per ECG
    split: np.ndarray  # "train" / "test" (pretraining split)
    y: np.ndarray  # (n, 4): 1 / 0 / NaN unknown
    segments: list[np.ndarray]  # (n_i, 12, 2500) per ECG


def labels_of(row: dict) -> list[float]:
    groups = row["label_groups"].split(";") if row["label_groups"] else None
    known = groups is not None
    has = (lambda *names: float(any(g in groups for g in names))) if known else (lambda *names: np.nan)
    sex = {"M": 1.0, "F": 0.0}.get(row["sex"], np.nan)
    return [has("AF_AFL"), has("NORM", "NSR"), has("CD"), sex]


def load_cohort() -> tuple[Cohort, dict]:
    from ecg_atlas.embedder.discover import find_ecgs, read_source
    from ecg_atlas.embedder.preprocessing import preprocess
    from ecg_atlas.embedder.pretrain.data import patient_split
    from ecg_atlas.errors import AtlasError

    rows = {r["record"]: r for r in csv.DictReader(open(DATA / "manifest.csv", newline=""))}
    ids, groups, split, y, segments, skipped = [], [], [], [], [], {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for source in find_ecgs([DATA]):
            row = rows.get(source.ecg_id)
            if row is None:
                continue
            try:
                segs = preprocess(read_source(source))
            except AtlasError as exc:
                reason = getattr(exc, "reason", type(exc).__name__)
                skipped[reason] = skipped.get(reason, 0) + 1
                continue
            key = row["patient_id"] or row["record"]
            ids.append(source.ecg_id)
            groups.append(key)
            split.append(patient_split(key))
            y.append(labels_of(row))
            segments.append(segs)
    return Cohort(ids, np.array(groups, dtype=object), np.array(split, dtype=object), np.array(y, dtype=float),
                  segments), skipped


def probe_split(cohort: Cohort, seed: int = 0) -> np.ndarray:
    """train-split patients → train / val (80 / 20 by patient); test-split patients → test."""
    from ecg_atlas.analysis.splits import split_by_patient

    out = np.where(cohort.split == "test", "test", "").astype(object)
    train = np.flatnonzero(cohort.split == "train")
    inner = split_by_patient(cohort.groups[train], np.nan_to_num(cohort.y[train], nan=0.0),
                             fractions=(0.8, 0.2, 0.0), seed=seed)
    out[train] = inner
    return out


def embed(spec: str, cohort: Cohort) -> tuple[np.ndarray, str, float]:
    from ecg_atlas.embedder import load_encoder

    encoder = load_encoder(spec, device="cpu")
    t0 = time.perf_counter()
    flat = np.concatenate(cohort.segments)
    vectors = np.concatenate([encoder.embed(flat[i:i + 32]) for i in range(0, len(flat), 32)])
    bounds = np.cumsum([0] + [len(s) for s in cohort.segments])
    records = np.stack([vectors[a:b].mean(axis=0) for a, b in zip(bounds[:-1], bounds[1:])])
    return records, encoder.model_id, time.perf_counter() - t0


def linear_probe(vectors: np.ndarray, cohort: Cohort, split: np.ndarray, n_bootstrap: int) -> dict:
    from ecg_atlas.analysis.probe import MULTILABEL, Targets, train_probe

    _, report = train_probe(vectors, Targets(MULTILABEL, LABELS, cohort.y), cohort.groups, split,
                            n_bootstrap=n_bootstrap, min_positives=3, fractions=(1.0,))
    return report.test.to_dict()


def cross_validated_probe(vectors: np.ndarray, cohort: Cohort, n_bootstrap: int, seed: int) -> dict:
    """Secondary, lower-variance figure: 5-fold-by-patient CV over every ECG (see the module notes)."""
    from ecg_atlas.analysis.probe import MULTILABEL, Targets, cross_validate_probe
    from ecg_atlas.analysis.splits import kfold_by_patient

    folds = kfold_by_patient(cohort.groups, 5, np.nan_to_num(cohort.y, nan=0.0), seed=seed)
    _, report = cross_validate_probe(vectors, Targets(MULTILABEL, LABELS, cohort.y), cohort.groups, folds,
                                     n_bootstrap=n_bootstrap, seed=seed, min_positives=3)
    return report.test.to_dict()


def retrieval(vectors: np.ndarray, cohort: Cohort) -> dict:
    """precision@5 per label: test queries against the train-split gallery (cosine)."""
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    queries, gallery = np.flatnonzero(cohort.split == "test"), np.flatnonzero(cohort.split == "train")
    out = {}
    for j, name in enumerate(LABELS):
        g = gallery[~np.isnan(cohort.y[gallery, j])]
        sim = unit[queries] @ unit[g].T
        top = g[np.argsort(-sim, axis=1)[:, :K]]
        yq, yt = cohort.y[queries, j], cohort.y[top, j]
        if name == "male sex":  # both directions: the same sex as the query
            keep = ~np.isnan(yq)
            hits = (yt[keep] == yq[keep, None]).mean(axis=1)
            prevalence = np.nanmean(cohort.y[g, j])
            chance = np.where(yq[keep] == 1, prevalence, 1 - prevalence)
        else:
            keep = yq == 1
            hits = (yt[keep] == 1).mean(axis=1)
            chance = np.full(keep.sum(), np.nanmean(cohort.y[g, j]))
        out[name] = {"queries": int(keep.sum()), "precision_at_5": float(hits.mean()), "chance": float(chance.mean())}
    out["macro"] = {"precision_at_5": float(np.mean([out[n]["precision_at_5"] for n in LABELS])),
                    "chance": float(np.mean([out[n]["chance"] for n in LABELS]))}
    return out


def supervised_baseline(cohort: Cohort, split: np.ndarray, n_bootstrap: int, epochs: int, seed: int) -> dict:
    """A small CNN trained from scratch on the labelled training segments; AUROC on the test split."""
    import torch
    from torch import nn

    from ecg_atlas.analysis.metrics import evaluate

    torch.manual_seed(seed)

    def block(i: int, o: int) -> list[nn.Module]:
        return [nn.Conv1d(i, o, 7, stride=2, padding=3, bias=False), nn.BatchNorm1d(o), nn.ReLU()]

    net = nn.Sequential(*block(12, 32), *block(32, 64), *block(64, 64), *block(64, 128),
                        nn.AdaptiveAvgPool1d(1), nn.Flatten(), nn.Dropout(0.2), nn.Linear(128, len(LABELS)))

    def rows_to_segments(rows: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
        segs = [cohort.segments[i] for i in rows]
        owner = np.concatenate([[k] * len(s) for k, s in enumerate(segs)])
        x = torch.from_numpy(np.concatenate(segs))
        y = torch.from_numpy(np.repeat(cohort.y[rows], [len(s) for s in segs], axis=0)).float()
        return x, y, owner

    def masked_bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        known = ~torch.isnan(y)
        return nn.functional.binary_cross_entropy_with_logits(logits[known], y[known])

    def record_logits(rows: np.ndarray) -> np.ndarray:
        x, _, owner = rows_to_segments(rows)
        net.eval()
        with torch.no_grad():
            z = torch.cat([net(x[i:i + 64]) for i in range(0, len(x), 64)]).numpy()
        return np.stack([z[owner == k].mean(axis=0) for k in range(len(rows))])

    known = ~np.isnan(cohort.y).all(axis=1)
    train_rows = np.flatnonzero((split == "train") & known)
    val_rows = np.flatnonzero((split == "val") & known)
    test_rows = np.flatnonzero((split == "test") & known)
    x, y, _ = rows_to_segments(train_rows)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(seed)
    best, best_state, best_epoch = np.inf, None, -1
    val_y = torch.from_numpy(cohort.y[val_rows]).float()
    for epoch in range(epochs):
        net.train()
        for idx in torch.randperm(len(x), generator=gen).split(32):
            loss = masked_bce(net(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        val_loss = float(masked_bce(torch.from_numpy(record_logits(val_rows)), val_y))
        if val_loss < best:
            best, best_epoch = val_loss, epoch
            best_state = {k: v.clone() for k, v in net.state_dict().items()}
    net.load_state_dict(best_state)
    scores = record_logits(test_rows)
    metrics = evaluate(cohort.y[test_rows], scores, LABELS, cohort.groups[test_rows], n_resamples=n_bootstrap,
                       seed=seed).to_dict()
    metrics["training"] = {"segments": len(x), "epochs": epochs, "best_epoch": best_epoch + 1,
                           "parameters": sum(p.numel() for p in net.parameters())}
    return metrics


def fmt(interval: dict) -> str:
    value, low, high = interval["value"], interval.get("ci_low"), interval.get("ci_high")
    if value is None:
        return "n/a"
    return f"{value:.3f} [{low:.2f}, {high:.2f}]" if low is not None else f"{value:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--encoder", action="append", default=None,
                    help="encoder spec (repeatable); default: bundled, random:small:0, random:small:1")
    ap.add_argument("--bootstrap", type=int, default=1000)
    ap.add_argument("--epochs", type=int, default=40, help="supervised baseline epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    args = ap.parse_args()
    specs = args.encoder or ["bundled", "random:small:0", "random:small:1"]

    import torch

    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, {torch.get_num_threads()} threads")
    t0 = time.perf_counter()
    cohort, skipped = load_cohort()
    split = probe_split(cohort, args.seed)
    print(f"cohort: {len(cohort.ecg_ids)} ECGs read ({sum(len(s) for s in cohort.segments)} segments; refused: "
          f"{skipped}) in {time.perf_counter() - t0:.0f} s; ECGs per probe split: "
          + ", ".join(f"{s} {int((split == s).sum())}" for s in ("train", "val", "test")))
    for j, name in enumerate(LABELS):
        counts = {s: f"{int(np.nansum(cohort.y[split == s, j]))}/{int((~np.isnan(cohort.y[split == s, j])).sum())}"
                  for s in ("train", "val", "test")}
        print(f"  {name}: positives/known {counts}")
    results = {"cohort": {"ecgs": len(cohort.ecg_ids), "refused": skipped,
                          "split": {s: int((split == s).sum()) for s in ("train", "val", "test")}},
               "encoders": {}}
    for spec in specs:
        vectors, model_id, seconds = embed(spec, cohort)
        probe = linear_probe(vectors, cohort, split, args.bootstrap)
        ret = retrieval(vectors, cohort)
        cv = cross_validated_probe(vectors, cohort, args.bootstrap, args.seed)
        results["encoders"][spec] = {"model_id": model_id, "dim": int(vectors.shape[1]), "probe": probe,
                                     "probe_cv_all_ecgs": cv, "retrieval": ret, "embed_seconds": seconds}
        print(f"\n{spec} ({model_id}, {vectors.shape[1]}-d; embedded in {seconds:.0f} s)")
        print(f"  linear probe macro AUROC {fmt(probe['macro']['auroc'])}")
        for label in probe["labels"]:
            print(f"    {label['label']:<24} AUROC {fmt(label['auroc'])}  (test positives {label['n_positive']}/"
                  f"{label['n_positive'] + label['n_negative']})")
        print(f"  secondary: 5-fold-by-patient CV over all {len(cohort.ecg_ids)} ECGs, macro AUROC "
              f"{fmt(cv['macro']['auroc'])}; " + ", ".join(f"{lab['label']} {lab['auroc']['value']:.3f}"
                                                       for lab in cv["labels"]))
        print(f"  retrieval precision@5 macro {ret['macro']['precision_at_5']:.3f} "
              f"(chance {ret['macro']['chance']:.3f})")
        for name in LABELS:
            r = ret[name]
            print(f"    {name:<24} {r['precision_at_5']:.3f} (chance {r['chance']:.3f}, {r['queries']} queries)")
    t1 = time.perf_counter()
    base = supervised_baseline(cohort, split, args.bootstrap, args.epochs, args.seed)
    results["supervised_cnn"] = base
    print(f"\nsupervised CNN baseline ({base['training']['parameters']} parameters, "
          f"{base['training']['segments']} training segments, best epoch {base['training']['best_epoch']}/"
          f"{args.epochs}; {time.perf_counter() - t1:.0f} s)")
    print(f"  macro AUROC {fmt(base['macro']['auroc'])}")
    for label in base["labels"]:
        print(f"    {label['label']:<24} AUROC {fmt(label['auroc'])}")
    ref = specs[1] if len(specs) > 1 else None
    if ref:
        print("\nratios against", ref, "(measured in this run):")
        r_probe = results["encoders"][ref]["probe"]["macro"]["auroc"]["value"]
        r_ret = results["encoders"][ref]["retrieval"]["macro"]["precision_at_5"]
        for spec in specs:
            e = results["encoders"][spec]
            print(f"  {spec:<20} macro AUROC × {e['probe']['macro']['auroc']['value'] / r_probe:.3f}, "
                  f"precision@5 × {e['retrieval']['macro']['precision_at_5'] / r_ret:.3f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2, default=float))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
