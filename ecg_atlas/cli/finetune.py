"""`ecg-atlas finetune`: fine-tune an encoder on your labels, judged beside a frozen probe and a random init.

From files labelled by a manifest::

    ecg-atlas finetune ptbxl/ --manifest ptbxl/manifest.csv --id-column record \\
        --target NORM,MI,STTC,CD,HYP --train "strat_fold <= 8" --val "strat_fold = 9" \\
        --checkpoint bundled --out runs/ptbxl

or from a store's own signal copies and metadata (``--store DIR``, or ``--server HOST:PORT``)::

    ecg-atlas finetune --store atlas/ --target label_groups:AF_AFL --checkpoint bundled --out runs/af

``--target`` takes what ``probe train --target`` takes (0/1 columns, COLUMN:LABEL of a label list,
COLUMN=VALUE, one multi-class column; several, or comma-separated, make a multi-label task).
``--train/--val/--test`` are search filters over the manifest or the store's metadata; without
them, the probes' random split by patient. ``--checkpoint`` takes every spec ``serve`` takes.

OUT holds model.pt (``serve --checkpoint OUT/model.pt``), report.json, MODEL_CARD.md,
checkpoint_last.pt (``--resume`` goes on from it) and events.jsonl. ``--nproc N`` trains in N
processes (torch.distributed; gloo on CPUs, NCCL on GPUs); under an outside ``torchrun`` the same
command joins its group. Progress: a bar on a terminal, JSON-lines events on stderr otherwise
(and with ``--json``, which prints the closing summary as JSON).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ecg_atlas.cli._client import add_client_args, connect, print_json, rpc_errors
from ecg_atlas.errors import AtlasError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("finetune", help="fine-tune an encoder on labelled ECGs (files + manifest, or a store)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="*", type=Path, help="ECG files or directories (with --manifest)")
    data = p.add_argument_group("data")
    data.add_argument("--manifest", type=Path, default=None, help="CSV or Parquet, one row per ECG: ids and labels")
    data.add_argument("--id-column", default="record",
                      help="manifest column matching a file's id: its path relative to the folder named, without "
                           "extension (default record)")
    data.add_argument("--patient-column", default=None,
                      help="manifest column of patient ids (default: patient_id when present)")
    data.add_argument("--store", default=None, help="a store directory: train on its signal copies and metadata")
    data.add_argument("--target", action="append", required=True, metavar="SPEC",
                      help="label(s) to learn, as probe train takes them; repeat or comma-separate for multi-label")
    data.add_argument("--train", default=None, metavar="FILTER", help="training records, e.g. 'strat_fold <= 8'")
    data.add_argument("--val", default=None, metavar="FILTER", help="validation records (early stopping, choice)")
    data.add_argument("--test", default=None, metavar="FILTER", help="held-out test records (optional)")
    data.add_argument("--fractions", default="0.7,0.1,0.2",
                      help="train,val,test shares of patients for the random split when no filter is given")
    data.add_argument("--min-positives", type=int, default=10,
                      help="refuse a label with fewer positives (or negatives) in train or val (default 10); "
                           "0 lets a label with no val records train: early stopping and the macro averages "
                           "then leave it out (a label needs a positive and a negative to have an AUROC)")
    run = p.add_argument_group("training")
    run.add_argument("--checkpoint", default="bundled",
                     help="base encoder: bundled, an ECG-FM file or hf:..., a HuBERT-ECG folder, an ECGFounder "
                          "file, random:PRESET (default bundled)")
    run.add_argument("--out", type=Path, required=True, help="run directory (model.pt, report.json, MODEL_CARD.md)")
    run.add_argument("--name", default=None, help="model name (its id is finetuned-NAME; default: OUT's name)")
    run.add_argument("--epochs", type=int, default=20)
    run.add_argument("--minutes", type=float, default=None, help="training budget in minutes (a resumed run's too)")
    run.add_argument("--batch-size", type=int, default=32, help="windows per update and process (default 32)")
    run.add_argument("--lr", type=float, default=None, help="learning rate (default: the family's recipe)")
    run.add_argument("--weight-decay", type=float, default=None, help="(default: the family's recipe)")
    run.add_argument("--augment", action="store_true",
                     help="perturb training windows (time shift, lead gain, baseline wander, noise, a dropped lead; "
                          "ecg_atlas/finetune/augment.py)")
    run.add_argument("--patience", type=int, default=5, help="epochs without a val macro AUROC gain before stopping")
    run.add_argument("--nproc", type=int, default=1, help="training processes on this machine (default 1)")
    run.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (bf16 autocast on CUDA)")
    run.add_argument("--resume", action="store_true", help="go on from OUT/checkpoint_last.pt")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--bootstrap", type=int, default=1000, help="patient-bootstrap resamples for the CIs")
    add_client_args(p, store_verb=True)
    p.set_defaults(func=run_finetune)


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise AtlasError(f"--fractions takes three comma-separated numbers, got {text!r}") from None
    if len(values) != 3:
        raise AtlasError(f"--fractions takes three comma-separated numbers (train,val,test), got {text!r}")
    return values


@rpc_errors
def run_finetune(args: argparse.Namespace) -> int:
    from ecg_atlas.finetune import run as finetune_run
    from ecg_atlas.finetune.sources import Selection
    from ecg_atlas.finetune.train import TrainConfig

    if args.nproc < 1:
        raise AtlasError(f"--nproc must be at least 1, got {args.nproc}")
    selection = Selection(Selection.target_specs(args.target), train=args.train, val=args.val, test=args.test,
                          seed=args.seed, min_positives=args.min_positives, fractions=_fractions(args.fractions))
    if finetune_run.rank() == 0:
        finetune_run.check_out_dir(args.out, args.resume)
    # other ranks of a torchrun group only prepare windows and copy weights from it: keep it off their GPU
    base = finetune_run.load_base(args.checkpoint, device=args.device if finetune_run.rank() == 0 else "cpu")
    config = TrainConfig(epochs=args.epochs, minutes=args.minutes, batch_size=args.batch_size, lr=args.lr,
                         weight_decay=args.weight_decay, patience=args.patience, seed=args.seed, device=args.device,
                         augment_fs=base.contract.fs if args.augment else None)
    display = Display(json_lines=args.json or not _is_terminal(sys.stderr), quiet=finetune_run.rank() != 0)
    started = time.perf_counter()
    try:
        data, intake = _data(args, base, selection, display)
        spec = finetune_run.RunSpec(args.checkpoint, args.out, args.name or finetune_run.default_name(args.out),
                                    config, nproc=args.nproc, resume=args.resume, min_positives=args.min_positives,
                                    n_bootstrap=args.bootstrap)
        outcome = finetune_run.run(spec, base, data, intake, data_seconds=time.perf_counter() - started,
                                   on_event=display)
    finally:
        display.close()
    if outcome is None:  # another rank of a torchrun group: rank 0 reports
        return 0
    _summary(args, outcome)
    return 0


def _data(args: argparse.Namespace, base, selection, display):
    from ecg_atlas.finetune import sources

    if args.paths:
        if args.store or args.server:
            raise AtlasError("give ECG files (with --manifest) or --store / --server, not both")
        if args.manifest is None:
            raise AtlasError("ECG files need their labels: pass --manifest CSV (and --id-column)")
        return sources.from_files(args.paths, args.manifest, args.id_column, base, selection,
                                  patient_column=args.patient_column, on_event=display)
    if args.manifest is not None:
        raise AtlasError("--manifest labels ECG files: name the files or folders too")
    if not args.store and not args.server:
        raise AtlasError("name the labelled ECGs: files or folders with --manifest CSV, or a store (--store DIR), "
                         "or a server (--server HOST:PORT)")
    from ecg_atlas.cli._store import access

    if access(args).via == "server":
        with connect(args) as client:
            return sources.from_server(client, base, selection, on_event=display)
    return sources.from_store(args.store, base, selection, on_event=display)


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


class Display:
    """The run's events: JSON lines on stderr, or progress bars on a terminal."""

    def __init__(self, *, json_lines: bool, quiet: bool = False, stream=None) -> None:
        self.json_lines, self.quiet = json_lines, quiet
        self.stream = stream if stream is not None else sys.stderr
        self.bar = None
        self.bar_kind = None

    def __call__(self, event: dict) -> None:
        if self.quiet:
            return
        if self.json_lines:
            from ecg_atlas.jsonable import jsonable

            print(json.dumps(jsonable(event)), file=self.stream, flush=True)
            return
        kind = event.get("event")
        if kind == "data":
            self._bar("reading ECGs", event.get("total"), "ECG").set(event.get("done", 0))
        elif kind == "start":
            self._bar("fine-tuning", event.get("updates_total"), "update").set(event.get("update", 0))
        elif kind == "step":
            bar = self._bar("fine-tuning", event.get("updates_total"), "update")
            bar.set(event.get("update", 0), stage=f"epoch {event.get('epoch')}, loss {event.get('loss', 0):.3f}")
        elif kind == "eval" and self.bar is not None:
            value = event.get("val_macro_auroc")
            self.bar.note(f"epoch {event.get('epoch')}: val macro AUROC "
                          + (f"{value:.3f}" if isinstance(value, (int, float)) else "n/a"))
        elif kind == "stop" and self.bar is not None:
            self.bar.note(f"stopped: {event.get('reason') or event.get('stopped')}")
        elif kind == "baseline":
            self.close()
            print(f"ecg-atlas finetune: baseline {event.get('model')} on {event.get('records')} records",
                  file=self.stream, flush=True)

    def _bar(self, what: str, total, unit: str):
        from ecg_atlas.progress import Progress

        if self.bar is None or self.bar_kind != what:
            self.close()
            self.bar = Progress(f"ecg-atlas finetune: {what}", total, unit, stream=self.stream, terminal=True)
            self.bar_kind = what
        return self.bar

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
            self.bar_kind = None


def _summary(args: argparse.Namespace, outcome) -> None:
    from ecg_atlas.finetune.report import summary_lines

    files = {name: str(path) for name, path in outcome.files.items()}
    if args.json:
        report = dict(outcome.report)
        report["training"] = {k: v for k, v in report["training"].items() if k != "history"}
        print_json({**report, "files": files})
        return
    print("\n".join(summary_lines(outcome.report, outcome.evaluation)))
    print(f"model {files['model']}  (serve it: ecg-atlas serve --checkpoint {files['model']})")
    print(f"report {files['report']}, model card {files['model_card']}")
