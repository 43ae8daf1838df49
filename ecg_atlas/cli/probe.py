"""`ecg-atlas probe train|eval|predict|list`: linear probes on a store's record vectors.

Probes are kept in the store directory (analysis/probes/NAME). When a server holds the store (or
--server names one) every verb goes through its RPCs (TrainProbe, EvaluateProbe, Predict,
ListProbes); otherwise the store is opened directly, read-only.

One macro rule for train and eval: a label with fewer than --min-positives positives or negatives
(default 10) where the probe is trained or where it is measured is flagged and left out of the
macro average; both verbs list the labels left out and why (--json: macro.left_out).

Off a terminal (piped, logged) a long run prints a progress line per stage and every
$ECG_ATLAS_PROGRESS_EVERY_S seconds (default 10; off: none).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ecg_atlas.cli._client import add_client_args, connect, rpc_errors
from ecg_atlas.cli._store import access
from ecg_atlas.progress import Progress, waiting

#: --name values for a fine-tuned model's own classifier head (ecgfm-head: the older name).
HEAD_NAMES = ("head", "ecgfm-head")
#: Beside a label the macro average leaves out (the reasons follow the table).
LEFT_OUT_MARK = "left out of the macro: see below"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("probe", help="train, evaluate, apply and list linear probes", description=__doc__)
    verbs = p.add_subparsers(dest="probe_command", required=True, metavar="VERB")

    t = verbs.add_parser("train", help="train a probe on stored vectors with labels from store metadata")
    t.add_argument("--store", default=None, help="store directory (through its server when one holds it)")
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
                   help="labels with fewer positives (or negatives) in train or test are flagged and left out of "
                        "the macro average (default 10); `probe eval` keeps the probe's own value")
    t.add_argument("--label-fractions", default="0.01,0.1,1", help="shares of training patients for the curve")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--baseline", action="store_true",
                   help="repeat the probe on a random-init encoder of the same architecture (reads the raw ECGs)")
    t.add_argument("--checkpoint", default=None,
                   help="the store's encoder (any --checkpoint kind: bundled, a file or folder, hf:..., random:...), "
                        "for --baseline: its random-init twin of the same architecture")
    t.add_argument("--overwrite", action="store_true", help="replace a probe of the same name")
    add_client_args(t, store_verb=True)
    t.set_defaults(func=run_train)

    e = verbs.add_parser("eval", help="evaluate a saved probe on a cohort (its training patients left out)",
                         description="A saved probe on a cohort, patients it was trained or tuned on left out. "
                                     "The macro average leaves out the labels with fewer than the probe's "
                                     "--min-positives positives or negatives in training or here, and says so.")
    e.add_argument("--store", default=None, help="store directory (through its server when one holds it)")
    e.add_argument("--name", required=True)
    e.add_argument("--where", action="append", default=[], metavar="FILTER")
    e.add_argument("--bootstrap", type=int, default=1000)
    e.add_argument("--seed", type=int, default=0)
    add_client_args(e, store_verb=True)
    e.set_defaults(func=run_eval)

    pr = verbs.add_parser("predict", help="apply a probe to stored ECGs (--ids) or ECG files (with --checkpoint)",
                          description="Scores of a kept probe, or of a fine-tuned model's own classifier head "
                                      "(--name head: the served model's, or --checkpoint's without a server; "
                                      "ecgfm-head is the older name and still accepted), for stored ECGs and/or "
                                      "ECG files.")
    pr.add_argument("--store", default=None, help="store directory (through its server when one holds it)")
    pr.add_argument("--name", required=True,
                    help="a kept probe's name (`probe list`), or head: the fine-tuned model's own classifier head "
                         "(ecgfm-head, the older name, is accepted too)")
    pr.add_argument("--ids", nargs="+", default=[], help="stored ecg_ids")
    pr.add_argument("paths", nargs="*", type=Path,
                    help="ECG files to embed and score (a server embeds them with its own encoder; without one "
                         "they need --checkpoint)")
    pr.add_argument("--checkpoint", default=None,
                    help="without a server: the store's encoder, any --checkpoint kind (needed for files, and "
                         "for head: a fine-tuned checkpoint)")
    pr.add_argument("--device", default="auto")
    add_client_args(pr, store_verb=True)
    pr.set_defaults(func=run_predict)

    ls = verbs.add_parser("list", help="list the probes saved in a store")
    ls.add_argument("--store", default=None, help="store directory (through its server when one holds it)")
    add_client_args(ls, store_verb=True)
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


@rpc_errors
def run_train(args: argparse.Namespace) -> int:
    from ecg_atlas.analysis.probe import left_out_lines
    from ecg_atlas.analysis.store_io import architecture_of, random_init_like
    from ecg_atlas.analysis.tasks import SplitSpec, train_stored_probe
    from ecg_atlas.client import NO_DEADLINE
    from ecg_atlas.embedder.weights import release_for_sha256
    from ecg_atlas.errors import EncoderMismatchError

    if access(args).via == "server":
        with connect(args) as client, waiting("ecg-atlas probe train"):
            report = client.train_probe(
                args.name, args.target, where=args.where or None, split=args.split, fractions=_floats(args.fractions),
                balanced=args.class_weight == "balanced", n_bootstrap=args.bootstrap, seed=args.seed,
                min_positives=args.min_positives, overwrite=args.overwrite, baseline=args.baseline, timeout=NO_DEADLINE)
        if args.json:
            print(json.dumps({**report.report, "via": "server"}, indent=1))
            return 0
        for label in report.labels:
            print(f"  {label['label']:<30} AUROC {_estimate(label['auroc'])}  AUPRC {_estimate(label['auprc'])}"
                  + (f"  ({LEFT_OUT_MARK})" if label["flag"] else ""))
        print(f"  macro AUROC {_estimate(report.macro_auroc)}  AUPRC {_estimate(report.macro_auprc)} over "
              f"{len(report.macro_labels)} label(s), {report.n_ecgs} ECGs of {report.n_patients} patients "
              f"({report.split})")
        for line in left_out_lines({m["label"]: m["flag"] for m in report.labels if m["flag"]}):
            print(line)
        baseline = report.report.get("baseline")
        if baseline:
            macro = baseline.get("test", {}).get("macro", {})
            print(f"  random-init baseline macro AUROC {_estimate(macro.get('auroc') or {})}")
        print(f"saved probe {args.name!r} in the server's store")
        return 0
    baseline = None
    with _open(args.store) as store, Progress("ecg-atlas probe train", 100, "%") as bar:
        if args.baseline:
            identity = store.info().identity
            if args.checkpoint:
                from ecg_atlas.embedder import load_encoder

                enc = load_encoder(args.checkpoint)
                if enc.checkpoint_sha256 != identity.checkpoint_sha256:
                    raise EncoderMismatchError("--checkpoint is not the encoder that made this store's vectors")
                baseline = enc.random_twin(seed=args.seed)  # same architecture and contract, random weights
            elif (release := release_for_sha256(identity.checkpoint_sha256)) is not None:  # a bundled release
                from ecg_atlas.embedder.resolver import load_encoder

                baseline = load_encoder(release.spec).random_twin(seed=args.seed)
            else:
                baseline = random_init_like(architecture_of(identity), seed=args.seed)
        run = train_stored_probe(
            store, args.name, args.target, where=args.where,
            split=SplitSpec.parse(args.split, _floats(args.fractions)),
            class_weight=None if args.class_weight == "none" else "balanced", n_bootstrap=args.bootstrap,
            seed=args.seed, min_positives=args.min_positives, fractions=_floats(args.label_fractions),
            baseline_encoder=baseline, overwrite=args.overwrite, progress=lambda stage, pct: bar.set(pct, stage))
    if args.json:
        print(json.dumps(run.report.to_dict(), indent=1))
    else:
        print("\n".join(run.report.summary_lines()))
        print(f"saved probe {args.name!r} in {run.path}")
    return 0


def _estimate(e: dict) -> str:
    value = e.get("value")
    if value is None or value != value:
        return "n/a"
    return f"{value:.3f} [{e.get('ci_low', float('nan')):.3f}, {e.get('ci_high', float('nan')):.3f}]"


@rpc_errors
def run_eval(args: argparse.Namespace) -> int:
    from ecg_atlas.analysis.probe import left_out_lines
    from ecg_atlas.analysis.tasks import evaluate_stored_probe
    from ecg_atlas.client import NO_DEADLINE

    if access(args).via == "server":
        with connect(args) as client:
            out = client.evaluate_probe(args.name, where=args.where or None, n_bootstrap=args.bootstrap,
                                        seed=args.seed, timeout=NO_DEADLINE)
            flags = _server_flags(client, args.name, out)
        if args.json:
            print(json.dumps({**out, "macro_left_out": flags, "via": "server"}, indent=1))
            return 0
        print(f"{out['n_ecgs']} ECGs evaluated ({out['n_left_out']} left out: patients seen in training/tuning)")
        for m in out["labels"]:
            print(f"  {m['label']:<30} +{m['n_positive']}/-{m['n_negative']}  AUROC {_estimate(m['auroc'])}  "
                  f"AUPRC {_estimate(m['auprc'])}" + (f"  ({LEFT_OUT_MARK})" if m["label"] in flags else ""))
        print(f"  macro AUROC {_estimate(out['macro_auroc'])}  AUPRC {_estimate(out['macro_auprc'])} over "
              f"{len(out['macro_labels'])} label(s)")
        for line in left_out_lines(flags):
            print(line)
        return 0
    with _open(args.store) as store:
        metrics, used, left_out = evaluate_stored_probe(store, args.name, where=args.where,
                                                        n_bootstrap=args.bootstrap, seed=args.seed)
    if args.json:
        print(json.dumps({"ecgs": used, "left_out_seen_patients": left_out, **metrics.to_dict()}, indent=1))
        return 0
    print(f"{used} ECGs evaluated ({left_out} left out: patients seen in training/tuning, or no label)")
    for m in metrics.labels:
        print(f"  {m.label:<30} +{m.n_positive}/-{m.n_negative}  AUROC {m.auroc}  AUPRC {m.auprc}"
              + (f"  ({LEFT_OUT_MARK})" if m.label in metrics.left_out else ""))
    print(f"  macro AUROC {metrics.macro_auroc}  AUPRC {metrics.macro_auprc} over {len(metrics.macro_labels)} label(s)")
    for line in left_out_lines(metrics.left_out):
        print(line)
    return 0


def _server_flags(client, name: str, out: dict) -> dict[str, str]:
    """Why the server's evaluation left labels out of its macro: the rule the server applied
    (analysis.tasks.evaluation_flags) on the probe's kept report and the counts it returned."""
    from ecg_atlas.analysis.tasks import evaluation_flags

    report = next((p.get("report") or {} for p in client.list_probes() if p["name"] == name), {})
    flags = evaluation_flags(report, {m["label"]: (m["n_positive"], m["n_negative"]) for m in out["labels"]})
    left = [m["label"] for m in out["labels"] if m["label"] not in out["macro_labels"]]
    return {label: flags.get(label, "left out of the macro average by the server") for label in left}


@rpc_errors
def run_predict(args: argparse.Namespace) -> int:
    import numpy as np

    from ecg_atlas.analysis.store_io import HEAD_PROBE_NAME, HeadProbe, check_same_encoder, load_probe, predict_stored
    from ecg_atlas.embedder.engine import record_vector
    from ecg_atlas.errors import AtlasError

    if not args.ids and not args.paths:
        raise AtlasError("name stored ECGs (--ids) or ECG files to score")
    if access(args).via == "server":  # the server embeds the files with its own encoder
        from ecg_atlas.embedder import read_ecg

        keys, scores, labels = [], [], []
        with connect(args) as client:
            if args.ids:
                done = client.predict(args.name, args.ids)
                keys, labels = list(args.ids), done.labels
                scores.append(done.probabilities)
            for path in args.paths:
                rec = read_ecg(path)
                done = client.predict(args.name, signals=[rec.signal], fs=rec.fs, lead_names=rec.lead_names)
                keys.append(str(path))
                labels = done.labels
                scores.append(done.probabilities)
        return _print_predictions(args, labels, keys, np.concatenate(scores))
    encoder = None
    if args.checkpoint:
        from ecg_atlas.embedder.resolver import load_encoder

        encoder = load_encoder(args.checkpoint, device=args.device)
    elif args.paths or args.name in HEAD_NAMES:
        raise AtlasError("--checkpoint is needed to embed ECG files and for --name head (a fine-tuned checkpoint)")
    is_head = args.name in HEAD_NAMES
    with _open(args.store) as store:
        if is_head:
            head = HeadProbe.from_encoder(encoder)
            labels, meta = head.labels, {"name": HEAD_PROBE_NAME, "identity": head.identity}
        else:
            probe, meta = load_probe(store, args.name)
            labels = probe.labels
        keys, scores = [], []
        if args.ids:
            keys += args.ids
            scores.append(head.predict_stored(store, args.ids) if is_head
                          else predict_stored(store, probe, meta, args.ids))
        if args.paths:
            from ecg_atlas.embedder import read_ecg
            from ecg_atlas.index import EncoderIdentity

            check_same_encoder(EncoderIdentity(encoder.model_id, encoder.checkpoint_sha256,
                                               encoder.contract.preprocessing_version, encoder.dim), meta)
            for path in args.paths:
                segments = encoder.embed(encoder.preprocess(read_ecg(path)))
                keys.append(str(path))
                scores.append(head.predict_segments([segments]) if is_head
                              else probe.predict_proba(record_vector(segments)[None, :]))
    return _print_predictions(args, labels, keys, np.concatenate(scores))


def _print_predictions(args: argparse.Namespace, labels, keys, table) -> int:
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


@rpc_errors
def run_list(args: argparse.Namespace) -> int:
    from ecg_atlas.analysis.store_io import list_probes

    if access(args).via == "server":
        with connect(args) as client:
            probes = [{k: v for k, v in p.items() if k != "report"} for p in client.list_probes()]
            for p in probes:
                p["macro_auroc"] = None if p["macro_auroc"] != p["macro_auroc"] else p["macro_auroc"]
    else:
        with _open(args.store) as store:
            probes = [{k: v for k, v in p.items() if k != "report"} for p in list_probes(store)]
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
