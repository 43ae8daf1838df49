"""One fine-tuning run, end to end: base encoder → data → train → evaluate → model.pt + report.

``load_base`` resolves ``--checkpoint`` (every spec ``serve`` takes); ``run`` takes the prepared
``FinetuneData`` and does the rest:

1. the base encoder's ``trainable()`` network (the family's recipe) is trained by
   ``train.train`` — in this process, in ``nproc`` local workers started by
   ``distributed.launch`` (torch's elastic launcher), or, under an outside ``torchrun``, as this
   rank of that group (every rank runs the same command; ``train`` joins the group);
2. only rank 0 goes on: record-level scores on val (and test), the two baselines and the verdict
   (``evaluate``), ``model.pt`` (``embedder.finetuned.save_finetuned``), ``report.json`` and
   ``MODEL_CARD.md`` (``report``). Other ranks return None.

Every event of the run is appended to ``OUT/events.jsonl`` (rank 0 only) and handed to
``on_event``; launched workers write the file and this process follows it, so a progress bar works
with ``--nproc`` too.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ecg_atlas.errors import AtlasError, CheckpointError
from ecg_atlas.jsonable import jsonable

from . import distributed
from .checkpoint import LAST
from .evaluate import Evaluation, evaluate_run
from .report import MODEL, base_facts, build_report, write_card, write_report
from .sources import Intake
from .types import FinetuneData

EVENTS = "events.jsonl"
#: How often this process looks for new events written by launched workers.
FOLLOW_EVERY_S = 0.5


@dataclass
class RunSpec:
    """What the command line asked for, beyond the data."""

    base_spec: str
    out_dir: Path
    name: str
    config: object  # train.TrainConfig
    nproc: int = 1
    resume: bool = False
    min_positives: int = 10
    n_bootstrap: int = 1000


@dataclass
class RunOutcome:
    report: dict
    evaluation: Evaluation
    files: dict[str, Path] = field(default_factory=dict)


def load_base(spec: str, device: str = "cpu"):
    """The encoder ``spec`` names, or a CheckpointError that says it is not one to fine-tune."""
    from ecg_atlas.embedder.resolver import load_encoder

    try:
        return load_encoder(spec, device=device)
    except CheckpointError as exc:
        raise CheckpointError(f"--checkpoint {spec} is not an encoder ECG Atlas can fine-tune: {exc}") from None


def default_name(out_dir: Path) -> str:
    """A run name from the output folder's name: lowercase letters, digits and '_'."""
    name = re.sub(r"[^a-z0-9_]+", "_", Path(out_dir).resolve().name.lower()).strip("_")[:60]
    return name if name[:1].isalpha() else f"run_{name}" if name else "run"


def rank() -> int:
    return int(os.environ.get("RANK", "0")) if distributed.joined() else 0


def check_out_dir(out_dir: Path, resume: bool) -> None:
    """Refuse to overwrite a finished run unless resuming it."""
    if (Path(out_dir) / MODEL).exists() and not resume:
        raise AtlasError(f"{out_dir} already holds a fine-tuned model; choose another --out, or pass --resume to "
                         f"finish (and re-evaluate) that run")
    if (Path(out_dir) / LAST).exists() and not resume:
        raise AtlasError(f"{out_dir} holds an unfinished run ({LAST}): pass --resume to go on from it, or choose "
                         f"another --out")


def run(spec: RunSpec, base, data: FinetuneData, intake: Intake, *, data_seconds: float = 0.0,
        on_event: Callable[[dict], None] | None = None) -> RunOutcome | None:
    """Train, evaluate and write the run directory (module docstring); None on ranks other than 0."""
    from ecg_atlas.embedder.encoders.base import resolve_device
    from ecg_atlas.embedder.finetuned import save_finetuned

    from .train import predict_records

    started = time.perf_counter()
    out_dir = Path(spec.out_dir)
    if rank() == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    network = base.trainable()
    events = out_dir / EVENTS
    if spec.nproc > 1 and not distributed.joined():
        with _following(events, on_event):
            result = distributed.launch(spec.nproc, _train_worker, data, network, spec.config, str(out_dir),
                                        spec.resume, str(events))
    else:
        from .train import train

        result = train(data, network, spec.config, out_dir, resume=spec.resume,
                       on_event=_EventFile(events, on_event) if rank() == 0 else None)
    if rank() != 0:
        return None
    emit = _EventFile(events, on_event)
    device = resolve_device(spec.config.device)
    finetuned = {part: predict_records(result.network, result.head, data, part, task=data.task, device=device,
                                       batch_size=spec.config.eval_batch_size)
                 for part in ("val", "test") if len(data.records_in(part))}
    emit({"event": "evaluate", "parts": list(finetuned)})
    evaluation = evaluate_run(data, finetuned, base, twin_seed=spec.config.seed, min_positives=spec.min_positives,
                              n_bootstrap=spec.n_bootstrap, seed=spec.config.seed, on_event=emit)
    recipe = dict(network.recipe)
    model_sha = save_finetuned(out_dir / MODEL, base=base, base_spec=spec.base_spec, network=result.network,
                               head=result.head, task=data.task, labels=list(data.labels), name=spec.name,
                               data_digest=data.digest, recipe=recipe, metrics=evaluation.model_metrics())
    history = list(result.history)
    epochs_run = max((int(h.get("epoch", 0)) for h in history), default=0)
    training = {"epochs_run": epochs_run, "best_epoch": result.best_epoch,
                "best_val_macro_auroc": result.best_val_macro_auroc, "stopped": result.stopped,
                "updates": result.updates, "seconds": round(result.seconds, 2),
                "segments_per_s": round(result.segments_per_s, 2), "class_weights": list(result.class_weights),
                "history": history}
    run_facts = {"processes": result.world_size, "device": str(device), "resumed": spec.resume,
                 "data_seconds": round(data_seconds, 2), "wall_seconds": round(data_seconds + time.perf_counter()
                                                                                - started, 2)}
    report = build_report(name=spec.name, base=base_facts(base, spec.base_spec), model_sha256=model_sha,
                          task=data.task, labels=list(data.labels), recipe=recipe,
                          train_config=asdict(spec.config), data={"digest": data.digest, **intake.to_dict()},
                          training=training, evaluation=evaluation, run=run_facts)
    files = {"model": out_dir / MODEL, "report": write_report(out_dir, report),
             "model_card": write_card(out_dir, report, evaluation)}
    emit({"event": "written", "files": sorted(files)})
    return RunOutcome(report, evaluation, {**files, "checkpoint": out_dir / "checkpoint_last.pt",
                                           "events": events})


def _train_worker(data: FinetuneData, network, config, out_dir: str, resume: bool, events: str):
    """One launched worker: train (rank 0 appends the events to `events`)."""
    from .train import train

    return train(data, network, config, out_dir, resume=resume, on_event=_EventFile(Path(events)))


class _EventFile:
    """An ``on_event`` that appends each event to a JSON-lines file, then hands it on (picklable
    when there is nothing to hand it on to: what launched workers get)."""

    def __init__(self, path: Path, then: Callable[[dict], None] | None = None) -> None:
        self.path, self.then = Path(path), then

    def __call__(self, event: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(jsonable(event)) + "\n")
        if self.then is not None:
            self.then(event)


@contextmanager
def _following(path: Path, on_event: Callable[[dict], None] | None):
    """Hand `on_event` every line appended to `path` while the block runs (and those left at its end)."""
    if on_event is None:
        yield
        return
    stop = threading.Event()
    offset = path.stat().st_size if path.exists() else 0

    def follow() -> None:
        nonlocal offset
        while True:
            last = stop.is_set()
            if path.exists():
                with open(path, "rb") as f:
                    f.seek(offset)
                    for line in f:
                        if not line.endswith(b"\n"):
                            break  # being written: read it next time
                        offset += len(line)
                        on_event(json.loads(line))
            if last:
                return
            stop.wait(FOLLOW_EVERY_S)

    thread = threading.Thread(target=follow, name="finetune-events", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
