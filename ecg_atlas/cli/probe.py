"""`ecg-atlas probe train|eval|predict|list`: linear probes on a store's record vectors.

Probes are kept in the store directory (analysis/probes/NAME). The store is opened directly, so
run these while no server holds the store for writing (train writes nothing into the DuckDB file
and opens it read-only).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="train, evaluate, apply and list linear probes", description=__doc__)
    verbs = p.add_subparsers(dest="probe_command", required=True, metavar="VERB")

    t = verbs.add_parser("train", help="train a probe on stored vectors with labels from store metadata")
    t.add_argument("--store", required=True, help="store directory")
    t.add_argument("--name", required=True, help="name to save the probe under (lowercase, digits, _)")
    t.add_argument("--target", action="append", required=True, metavar="SPEC",
                   help="label to predict (repeat for multi-label): LISTCOLUMN:LABEL, LISTCOLUMN:*, COLUMN=VALUE, "
                        "a boolean COLUMN, or one multi-class COLUMN")
    t.add_argument("--where", action="append", default=[], metavar="FILTER",
                   help="training cohort, e.g. 'age>=18' (repeat: AND)")
    t.add_argument("--split", default="patient",
                   help="patient (random by patient, default) | column:COLUMN[:train=1-8,val=9,test=10] | kfold:K")
    t.add_argument("--fractions", default="0.7,0.1,0.2", help="train,val,test shares of patients for --split patient")
    t.add_argument("--class-weight", choices=["none", "balanced"], default="none")
    t.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of test patients (default 1000)")
    t.add_argument("--min-positives", type=int, default=10,
                   help="labels with fewer positives (or negatives) in train or test are flagged, not averaged")
    t.add_argument("--label-fractions", default="0.01,0.1,1", help="shares of training patients for the curve")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--baseline", action="store_true",
                   help="repeat the probe on a random-init encoder of the same architecture (reads the raw ECGs)")
    t.add_argument("--checkpoint", default=None,
                   help="the store's ECG-FM checkpoint, for --baseline when its architecture is not a known preset")
    t.add_argument("--overwrite", action="store_true", help="replace a probe of the same name")
    t.add_argument("--json", action="store_true", help="print the full report as JSON")
    t.set_defaults(func=run_train)

    e = verbs.add_parser("eval", help="evaluate a saved probe on a cohort (its training patients left out)")
    e.add_argument("--store", required=True)
    e.add_argument("--name", required=True)
    e.add_argument("--where", action="append", default=[], metavar="FILTER")
    e.add_argument("--bootstrap", type=int, default=1000)
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--json", action="store_true")
    e.set_defaults(func=run_eval)

    pr = verbs.add_parser("predict", help="apply a probe to stored ECGs (--ids) or ECG files (with --checkpoint)")
    pr.add_argument("--store", required=True)
    pr.add_argument("--name", required=True, help="probe name, or ecgfm-head for a finetuned checkpoint's own head")
    pr.add_argument("--ids", nargs="+", default=[], help="stored ecg_ids")
    pr.add_argument("paths", nargs="*", type=Path, help="ECG files to embed and score (needs --checkpoint)")
    pr.add_argument("--checkpoint", default=None, help="the store's ECG-FM checkpoint (for files, and for ecgfm-head)")
    pr.add_argument("--device", default="auto")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(func=run_predict)

    ls = verbs.add_parser("list", help="list the probes saved in a store")
    ls.add_argument("--store", required=True)
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(func=run_list)


def _floats(text: str) -> tuple[float, ...]:
    from ecg_atlas.errors import AtlasError

    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise AtlasError(f"expected comma-separated numbers, got {text!r}") from None


def _open(path: str, read_only: bool = True):
    from ecg_atlas.index import Store

    return Store.open(path, create=False, read_only=read_only, with_index=False)


def run_train(args: argparse.Namespace) -> int:
    from ecg_atlas.analysis.store_io import architecture_of, random_init_like
    from ecg_atlas.analysis.tasks import SplitSpec, train_stored_probe
    from ecg_atlas.errors import EncoderMismatchError

    baseline = None
    with _open(args.store) as store:
        if args.baseline:
            identity = store.info().identity
            if args.checkpoint:
                from ecg_atlas.embedder import load_encoder

                enc = load_encoder(args.checkpoint)
                if enc.checkpoint_sha256 != identity.checkpoint_sha256:
                    raise EncoderMismatchError("--checkpoint is not the encoder that made this store's vectors")
                baseline = random_init_like(enc, seed=args.seed)
            else:
                baseline = random_init_like(architecture_of(identity), seed=args.seed)
        run = train_stored_probe(
            store, args.name, args.target, where=args.where,
            split=SplitSpec.parse(args.split, _floats(args.fractions)),
            class_weight=None if args.class_weight == "none" else "balanced", n_bootstrap=args.bootstrap,
            seed=args.seed, min_positives=args.min_positives, fractions=_floats(args.label_fractions),
            baseline_encoder=baseline, overwrite=args.overwrite)
    if args.json:
        print(json.dumps(run.report.to_dict(), indent=1))
    else:
        print("\n".join(run.report.summary_lines()))
        print(f"saved probe {args.name!r} in {run.path}")
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from ecg_atlas.analysis.tasks import evaluate_stored_probe

    with _open(args.store) as store:
        metrics, used, left_out = evaluate_stored_probe(store, args.name, where=args.where,
                                                        n_bootstrap=args.bootstrap, seed=args.seed)
    if args.json:
        print(json.dumps({"ecgs": used, "left_out_seen_patients": left_out, **metrics.to_dict()}, indent=1))
        return 0
    print(f"{used} ECGs evaluated ({left_out} left out: patients seen in training/tuning, or no label)")
    for m in metrics.labels:
        print(f"  {m.label:<30} +{m.n_positive}/-{m.n_negative}  AUROC {m.auroc}  AUPRC {m.auprc}")
    print(f"  macro AUROC {metrics.macro_auroc}  AUPRC {metrics.macro_auprc}")
    return 0


def run_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from ecg_atlas.analysis.store_io import HEAD_PROBE_NAME, HeadProbe, check_same_encoder, load_probe, predict_stored
    from ecg_atlas.errors import AtlasError

    if not args.ids and not args.paths:
        raise AtlasError("name stored ECGs (--ids) or ECG files to score")
    encoder = None
    if args.checkpoint:
        from ecg_atlas.embedder.encoder import encoder_from_spec

        encoder = encoder_from_spec(args.checkpoint, device=args.device)
    elif args.paths or args.name == HEAD_PROBE_NAME:
        raise AtlasError("--checkpoint is needed to embed ECG files and for the ecgfm-head probe")
    with _open(args.store) as store:
        if args.name == HEAD_PROBE_NAME:
            head = HeadProbe.from_encoder(encoder)
            labels, meta = head.labels, {"name": HEAD_PROBE_NAME, "identity": head.identity}
        else:
            probe, meta = load_probe(store, args.name)
            labels = probe.labels
        keys, scores = [], []
        if args.ids:
            keys += args.ids
            scores.append(head.predict_stored(store, args.ids) if args.name == HEAD_PROBE_NAME
                          else predict_stored(store, probe, meta, args.ids))
        if args.paths:
            from ecg_atlas.embedder import preprocess, read_ecg
            from ecg_atlas.index import EncoderIdentity

            check_same_encoder(EncoderIdentity(encoder.model_id, encoder.checkpoint_sha256,
                                               encoder.contract.preprocessing_version, encoder.dim), meta)
            for path in args.paths:
                segments = encoder.embed(preprocess(read_ecg(path)))
                keys.append(str(path))
                scores.append(head.predict_segments([segments]) if args.name == HEAD_PROBE_NAME
                              else probe.predict_proba(segments.mean(axis=0, keepdims=True)))
    table = np.concatenate(scores)
    if args.json:
        print(json.dumps({"probe": args.name, "labels": labels,
                          "predictions": [{"ecg": k, "scores": dict(zip(labels, map(float, row)))}
                                          for k, row in zip(keys, table)]}, indent=1))
        return 0
    writer = sys.stdout
    writer.write("ecg\t" + "\t".join(labels) + "\n")
    for k, row in zip(keys, table):
        writer.write(k + "\t" + "\t".join(f"{v:.4f}" for v in row) + "\n")
    return 0


def run_list(args: argparse.Namespace) -> int:
    from ecg_atlas.analysis.store_io import list_probes

    with _open(args.store) as store:
        probes = list_probes(store)
    if args.json:
        print(json.dumps(probes, indent=1))
        return 0
    if not probes:
        print("no probes in this store")
    for p in probes:
        auroc = "n/a" if p["macro_auroc"] is None else f"{p['macro_auroc']:.3f}"
        print(f"{p['name']:<24} {p['kind']:<10} {len(p['labels'])} label(s)  macro AUROC {auroc}  "
              f"{p['model_id']}  {p['created_at']}")
    return 0
