"""The fine-tuning loop: a trainable encoder network and a linear head on the user's labels.

Segment-level training (each window carries its record's labels), record-level validation (the
mean of a record's segment probabilities, as ECG-FM predicts). Class imbalance: BCE with
``pos_weight`` = train negatives / positives per label (binary, multi-label), cross-entropy with
balanced class weights (multi-class); unknown (NaN) labels add nothing to the loss
(``objective.Loss``). Optimizer, learning rate and schedule: the network's recipe.

Early stopping on validation macro AUROC (labels constant on validation left out) with
``patience`` evaluations without a gain; the best weights are kept in memory and in
``checkpoint_last.pt``; a ``minutes`` budget covers the whole run, earlier attempts included.
Deterministic for a seed on a CPU (head init, the sampler's permutation, dropout masks). bf16
autocast on CUDA only. Resumable after kill -9 from ``checkpoint_last.pt`` (``finetune.checkpoint``),
written every ``save_every`` updates and at each epoch end.

Distributed (``finetune.distributed``): the same ``train()`` runs in every worker; the network and
head are wrapped in DistributedDataParallel, batches come from a seeded DistributedSampler,
validation sums are added across ranks, only rank 0 writes files and emits events.

Events (``on_event``): ``start``, ``step`` (every ``log_every`` updates), ``epoch``, ``eval``, ``best``,
``checkpoint``, ``stop``, ``done``: numbers and label names, never an id, a path or a signal.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data.distributed import DistributedSampler

from ecg_atlas.analysis.metrics import auroc
from ecg_atlas.embedder.encoders.base import resolve_device
from ecg_atlas.errors import AtlasError, TrainingDataError
from ecg_atlas.jsonable import jsonable

from . import distributed
from .augment import augment
from .checkpoint import check_same_run, cpu_copy, load_state, rng_state, save_state, set_rng_state
from .objective import Loss, make_optimizer, per_update
from .types import MULTICLASS, FinetuneData

#: Training windows kept on the GPU when they take at most this share of its free memory.
RESIDENT_SHARE = 0.25


@dataclass
class TrainConfig:
    epochs: int = 20
    minutes: float | None = None        # budget for the whole run (earlier attempts included)
    batch_size: int = 32                # per process
    lr: float | None = None             # None: the recipe's
    weight_decay: float | None = None   # None: the recipe's
    patience: int = 5                   # evaluations (epochs by default) without a val macro AUROC gain
    seed: int = 0
    device: str = "auto"
    eval_every: int | None = None       # updates; None: once per epoch
    save_every: int = 500               # updates (and at each epoch end)
    log_every: int = 20                 # updates between "step" events
    eval_batch_size: int = 64
    augment_fs: float | None = None     # Hz of the windows: perturb training batches (augment.py); None: off


@dataclass
class TrainResult:
    network: nn.Module                  # best weights, on the CPU, eval mode
    head: nn.Linear                     # best weights, on the CPU, eval mode
    best_epoch: int
    best_val_macro_auroc: float
    history: list[dict]
    seconds: float
    segments_per_s: float               # training windows per second over all processes, training time only
    stopped: str                        # "epochs" | "minutes" | "patience"
    updates: int
    world_size: int
    class_weights: list[float] = field(default_factory=list)   # pos_weight per label / weight per class


@dataclass
class _Progress:
    """Where the run is; saved in checkpoint_last.pt and restored on resume."""

    epoch: int = 0                  # epochs completed
    step: int = 0                   # batches trained in the current epoch
    updates: int = 0
    loss_sum: float = 0.0           # over the current epoch's batches
    loss_batches: int = 0
    segments: int = 0               # windows trained, all processes
    train_seconds: float = 0.0
    seconds: float = 0.0
    best: float = -math.inf
    best_epoch: int = 0
    best_update: int = 0
    stale: int = 0                  # evaluations since the best
    last_eval_update: int = -1
    history: list = field(default_factory=list)

    @property
    def epoch_no(self) -> int:
        """The 1-based epoch in progress, or the last one completed between epochs."""
        return self.epoch if self.step == 0 and self.epoch > 0 else self.epoch + 1


def train(data: FinetuneData, network: nn.Module, cfg: TrainConfig, out_dir: str | Path, *,
          resume: bool = False, on_event: Callable[[dict], None] | None = None) -> TrainResult:
    """Fine-tune ``network`` (a TrainableNetwork) with a new linear head on ``data``; module docstring."""
    _check(data, cfg)
    group = distributed.setup(cfg.device)
    try:
        emit = on_event if on_event is not None and group.rank == 0 else None
        return _fit(data, network, cfg, Path(out_dir), group, resume, emit)
    finally:
        distributed.teardown(group)


def _fit(data: FinetuneData, network: nn.Module, cfg: TrainConfig, out_dir: Path, group: distributed.Group,
         resume: bool, on_event: Callable[[dict], None] | None) -> TrainResult:
    dev, world = group.device, group.world_size
    torch.manual_seed(cfg.seed)
    head = nn.Linear(int(network.dim), data.n_outputs)
    nn.init.xavier_uniform_(head.weight)
    nn.init.zeros_(head.bias)
    model = _Classifier(network, head).to(dev).train()
    train_idx = data.segments_in("train")
    sampler = DistributedSampler(train_idx, num_replicas=world, rank=group.rank, shuffle=True, seed=cfg.seed)
    b = cfg.batch_size
    per_epoch = math.ceil(len(sampler) / b)
    optimizer, scheduler, lr = make_optimizer(network, head, per_epoch * cfg.epochs, lr=cfg.lr,
                                              weight_decay=cfg.weight_decay)
    stepwise = per_update(scheduler)
    loss_fn = Loss(data, train_idx, dev)
    windows = _Windows(data.segments, train_idx, dev)
    run = {"data_digest": data.digest, "world_size": world, "batch_size": b, "seed": cfg.seed, "task": data.task,
           "n_outputs": data.n_outputs, "dim": int(network.dim), "augment_fs": cfg.augment_fs}
    st, best_state = _Progress(), None
    torch.manual_seed(cfg.seed + group.rank)  # each rank its own dropout masks
    saved = group.from_rank0(load_state(out_dir) if resume and group.rank == 0 else None)
    if saved is not None:
        check_same_run(saved["run"], run)
        network.load_state_dict(saved["network"])
        head.load_state_dict(saved["head"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        st = _Progress(**saved["progress"])
        best_state = {"network": saved["best_network"], "head": saved["best_head"]} if saved["best_network"] else None
        set_rng_state(saved["rng"][group.rank], dev)
        del saved
    net = DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None) if world > 1 else model
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
    budget = cfg.minutes * 60 if cfg.minutes else None
    started, before = time.perf_counter(), st.seconds
    clock = _Clock(dev)
    loss_sum = torch.tensor(st.loss_sum, device=dev)

    def emit(event: str, **values) -> None:
        if on_event is not None:
            on_event(jsonable({"event": event, "epoch": st.epoch_no, "update": st.updates, **values}))

    def out_of_time(check: bool = True) -> bool:
        return budget is not None and check and group.any(before + time.perf_counter() - started > budget)

    def evaluate() -> bool:
        """Validate, keep the best weights; True when patience has run out."""
        nonlocal best_state
        probs = predict_records(network, head, data, "val", task=data.task, device=dev,
                                batch_size=cfg.eval_batch_size, distributed=group.distributed)
        macro, per_label = group.from_rank0(val_auroc(data, probs))
        st.last_eval_update = st.updates
        if not stepwise:
            scheduler.step(macro if math.isfinite(macro) else -math.inf)
        score = macro if math.isfinite(macro) else -math.inf
        improved = best_state is None or score > st.best
        st.history.append(jsonable({"epoch": st.epoch_no, "update": st.updates, "val_macro_auroc": macro,
                                    "val_auroc": per_label, "seconds": before + time.perf_counter() - started}))
        emit("eval", val_macro_auroc=macro, val_auroc=per_label, improved=improved)
        if improved:
            st.best, st.best_epoch, st.best_update, st.stale = score, st.epoch_no, st.updates, 0
            best_state = {"network": cpu_copy(network), "head": cpu_copy(head)}
            emit("best", val_macro_auroc=macro)
        else:
            st.stale += 1
        return st.stale >= cfg.patience

    def save() -> None:
        nonlocal saved_at
        saved_at = (st.updates, st.last_eval_update)
        rngs = group.gather(rng_state(dev))
        if group.rank == 0:
            st.loss_sum, st.seconds = float(loss_sum), before + time.perf_counter() - started
            save_state(out_dir, {"run": run, "progress": asdict(st), "network": cpu_copy(network),
                                 "head": cpu_copy(head), "optimizer": optimizer.state_dict(),
                                 "scheduler": scheduler.state_dict(), "rng": rngs,
                                 "best_network": best_state["network"] if best_state else {},
                                 "best_head": best_state["head"] if best_state else {}})
            emit("checkpoint")

    saved_at = (st.updates, st.last_eval_update) if st.updates else None
    if group.rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
    emit("start", epochs=cfg.epochs, updates_per_epoch=per_epoch, updates_total=per_epoch * cfg.epochs,
         train_segments=len(train_idx), val_records=len(data.records_in("val")), world_size=world,
         batch_size=b * world, lr=lr, device=dev.type, resumed=st.updates > 0, class_weights=loss_fn.weights)
    stopped = None
    while stopped is None:
        if st.epoch >= cfg.epochs:
            stopped = "epochs"
            break
        if out_of_time():
            stopped = "minutes"
            break
        sampler.set_epoch(st.epoch)
        order_cpu = torch.tensor(list(sampler), dtype=torch.long)
        order = order_cpu.to(dev)
        clock.start()
        for k in range(st.step, per_epoch):
            window = slice(k * b, (k + 1) * b)
            x = windows.take(order_cpu[window], order[window])
            if cfg.augment_fs:
                x = augment(x, fs=cfg.augment_fs)
            with autocast:
                logits = net(x)
            loss = loss_fn(logits, order[window])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if stepwise:
                scheduler.step()
            loss_sum += loss.detach()
            st.step, st.updates, st.loss_batches = k + 1, st.updates + 1, st.loss_batches + 1
            st.segments += len(order_cpu[window]) * world
            if st.updates % cfg.log_every == 0 and on_event is not None:
                emit("step", updates_total=per_epoch * cfg.epochs, loss=loss.item(),
                     segments_per_s=st.segments / max(st.train_seconds + clock.running(), 1e-9),
                     lr=optimizer.param_groups[0]["lr"])
            if out_of_time(world == 1 or dev.type == "cpu" or st.updates % cfg.log_every == 0):
                stopped = "minutes"
            if cfg.eval_every and st.updates % cfg.eval_every == 0:
                st.train_seconds += clock.stop()
                stopped = "patience" if evaluate() else stopped
                clock.start()
            if st.updates % cfg.save_every == 0 and st.step < per_epoch:
                st.train_seconds += clock.stop()
                save()
                clock.start()
            if stopped:
                break
        st.train_seconds += clock.stop()
        if stopped:
            break
        emit("epoch", loss=float(loss_sum) / max(1, st.loss_batches), seconds=before + time.perf_counter() - started,
             segments_per_s=st.segments / max(st.train_seconds, 1e-9))
        if not cfg.eval_every and st.last_eval_update != st.updates and evaluate():
            stopped = "patience"
        st.epoch, st.step, st.loss_batches = st.epoch + 1, 0, 0
        loss_sum.zero_()
        save()
    if best_state is None or st.last_eval_update != st.updates:
        evaluate()
    if saved_at != (st.updates, st.last_eval_update):
        save()
    emit("stop", reason=stopped)
    network.load_state_dict(best_state["network"])
    head.load_state_dict(best_state["head"])
    seconds = before + time.perf_counter() - started
    result = TrainResult(network.to("cpu").eval(), head.to("cpu").eval(), st.best_epoch,
                         st.best if math.isfinite(st.best) else math.nan, list(st.history), seconds,
                         st.segments / max(st.train_seconds, 1e-9), stopped, st.updates, world, loss_fn.weights)
    emit("done", best_epoch=result.best_epoch, best_val_macro_auroc=result.best_val_macro_auroc, seconds=seconds,
         segments_per_s=result.segments_per_s, stopped=stopped)
    return result


def predict_records(network: nn.Module, head: nn.Linear, data: FinetuneData, part: str, *, task: str,
                    device: str | torch.device = "auto", batch_size: int = 64, distributed: bool = False) -> np.ndarray:
    """(R_part, L) record-level probabilities for the records of split ``part`` (in the order of
    ``data.records_in(part)``): the mean over each record's segments of the segment probabilities
    (sigmoid; softmax for multi-class). ``network`` and ``head`` are moved to ``device``.

    ``distributed``: every rank of an initialised group calls this; each runs a share of the
    segments and the sums are added across ranks (all ranks return the whole result).
    """
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    records = data.records_in(part)
    row = np.full(len(data.record_ids), -1, dtype=np.int64)
    row[records] = np.arange(len(records))
    segments = data.segments_in(part)
    rank, world = (torch.distributed.get_rank(), torch.distributed.get_world_size()) if distributed else (0, 1)
    mine = segments[rank::world]
    sums = torch.zeros(len(records), data.n_outputs, dtype=torch.float64, device=dev)
    counts = torch.zeros(len(records), dtype=torch.float64, device=dev)
    modes = network.training, head.training
    network.to(dev).eval()
    head.to(dev).eval()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
    with torch.no_grad(), autocast:
        for start in range(0, len(mine), batch_size):
            chunk = mine[start:start + batch_size]
            logits = head(network(torch.from_numpy(data.segments[chunk]).to(dev, non_blocking=True))).float()
            probs = logits.softmax(dim=1) if task == MULTICLASS else logits.sigmoid()
            at = torch.from_numpy(row[data.segment_record[chunk]]).to(dev)
            sums.index_add_(0, at, probs.double())
            counts.index_add_(0, at, torch.ones(len(chunk), dtype=torch.float64, device=dev))
    network.train(modes[0])
    head.train(modes[1])
    if distributed:
        torch.distributed.all_reduce(sums)
        torch.distributed.all_reduce(counts)
    return (sums / counts[:, None]).cpu().numpy().astype(np.float32)


def val_auroc(data: FinetuneData, probs: np.ndarray, part: str = "val") -> tuple[float, dict[str, float]]:
    """Macro AUROC of record-level ``probs`` on split ``part`` (labels whose known values there are
    all one class are left out of the macro; NaN when none is left) and the per-label values."""
    per_label = {name: auroc(*_known(data, part, j, probs)) for j, name in enumerate(data.labels)}
    defined = [v for v in per_label.values() if math.isfinite(v)]
    return (float(np.mean(defined)) if defined else math.nan), per_label


def _known(data: FinetuneData, part: str, j: int, probs: np.ndarray | None = None):
    """Label ``j``'s known 0/1 truth on split ``part`` and the matching scores."""
    y = data.y[data.records_in(part)]
    column = y[:, 0] if data.task == MULTICLASS else y[:, j]
    known = ~np.isnan(column)
    truth = (column[known] == j) if data.task == MULTICLASS else column[known] > 0.5
    return truth.astype(float), (probs[known, j] if probs is not None else None)


def _check(data: FinetuneData, cfg: TrainConfig) -> None:
    for name in ("epochs", "batch_size", "patience", "save_every", "log_every", "eval_batch_size"):
        if getattr(cfg, name) < 1:
            raise AtlasError(f"{name} must be at least 1, got {getattr(cfg, name)}")
    if cfg.eval_every is not None and cfg.eval_every < 1:
        raise AtlasError(f"eval_every must be at least 1 update (or None: once per epoch), got {cfg.eval_every}")
    if cfg.minutes is not None and not cfg.minutes > 0:
        raise AtlasError(f"minutes must be a positive number, got {cfg.minutes}")
    if data.segments.ndim != 3 or data.segments.dtype != np.float32:
        raise AtlasError("FinetuneData.segments must be (S, 12, N) float32 windows")
    for part in ("train", "val"):
        if not len(data.segments_in(part)):
            raise TrainingDataError(f"the {part} split has no ECG windows; give it records (--{part} filter)",
                                    reason="empty_split", details={"split": part})
    both = [name for j, name in enumerate(data.labels) if len(set(_known(data, "val", j)[0])) == 2]
    if not both:
        raise TrainingDataError("no label has both positives and negatives in the val split, so early stopping "
                                "has nothing to measure; choose a larger or different val split",
                                reason="too_few_positives", details={"split": "val"})


class _Classifier(nn.Module):
    """The network and its head as one module (what DistributedDataParallel wraps)."""

    def __init__(self, network: nn.Module, head: nn.Linear):
        super().__init__()
        self.network, self.head = network, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.network(x))


class _Windows:
    """Training windows by position in the train split: kept on the GPU when they fit
    (``RESIDENT_SHARE``), else gathered on the host and copied from pinned memory asynchronously."""

    def __init__(self, segments: np.ndarray, train_idx: np.ndarray, dev: torch.device):
        self.dev, self.index = dev, torch.from_numpy(train_idx)
        self.host = torch.from_numpy(segments)
        self.resident = None
        size = len(train_idx) * segments[0].nbytes
        if dev.type == "cuda" and size <= RESIDENT_SHARE * torch.cuda.mem_get_info(dev)[0]:
            self.resident = torch.from_numpy(segments[train_idx]).to(dev)

    def take(self, at_cpu: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        if self.resident is not None:
            return self.resident[at]
        x = self.host[self.index[at_cpu]]
        return x.pin_memory().to(self.dev, non_blocking=True) if self.dev.type == "cuda" else x


class _Clock:
    """Training time only: stopped (after the device has caught up) around evaluations and saves."""

    def __init__(self, dev: torch.device):
        self.dev, self.since = dev, None

    def start(self) -> None:
        self.since = time.perf_counter()

    def running(self) -> float:
        return time.perf_counter() - self.since if self.since is not None else 0.0

    def stop(self) -> float:
        if self.since is None:
            return 0.0
        if self.dev.type == "cuda":
            torch.cuda.synchronize(self.dev)
        spent, self.since = time.perf_counter() - self.since, None
        return spent
