"""The pretraining loop: batches → objective → AdamW (decoupled weight decay, as the reference's Adam).

Checkpoints (``checkpoint_last.pt``) are written every ``save_every`` updates and at the end in the
fairseq-signals layout; ``resume=True`` picks up the last one in ``out_dir``. A loss-curve PNG is
written beside it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from ecg_atlas.errors import AtlasError

from ..discover import ECGSource
from ..encoders.base import resolve_device
from ..model import PRESETS, ECGFMConfig, flops_per_segment, init_weights
from .checkpoints import load_for_pretraining, save_pretraining_checkpoint
from .data import PairStream
from .objective import PretrainConfig, PretrainingModel, masked_positions, scaled_pretrain_config, span_mask

log = logging.getLogger(__name__)

#: The recipe's training-time dropouts (ecgfm_spec.md §2).
RECIPE_DROPOUTS = {"dropout": 0.1, "attention_dropout": 0.1, "activation_dropout": 0.0, "dropout_input": 0.1}
H100_BF16_DENSE_FLOPS = 989e12


@dataclass
class PretrainResult:
    checkpoint: Path
    curve: Path
    updates: int
    seconds: float
    segments_per_s: float
    history: list[dict]
    skipped: dict[str, int]


def build_model(preset: str, init: str | None, resume_from: Path | None,
                overrides: dict) -> tuple[PretrainingModel, dict | None, int, list[dict], float]:
    if resume_from is not None:
        return load_for_pretraining(resume_from, PretrainConfig(**overrides), RECIPE_DROPOUTS)
    if init:
        return load_for_pretraining(init, PretrainConfig(**overrides), RECIPE_DROPOUTS)
    if preset not in PRESETS:
        raise AtlasError(f"unknown config {preset!r}; choose one of {', '.join(PRESETS)}")
    enc_cfg: ECGFMConfig = replace(PRESETS[preset], **RECIPE_DROPOUTS)
    model = PretrainingModel(enc_cfg, scaled_pretrain_config(enc_cfg, **overrides))
    init_weights(model.encoder_model, seed=1)
    return model, None, 0, [], 0.0


def pretrain(sources: Sequence[ECGSource], out_dir: str | Path, *, preset: str = "small", init: str | None = None,
             resume: bool = False, max_updates: int = 1000, max_minutes: float | None = None,
             pairs_per_batch: int = 16, device: str = "auto", seed: int = 1, save_every: int = 200,
             log_every: int = 10, noise_std: float = 0.0, random_offset: bool = False,
             max_pairs_per_record: int | None = None, warmup_updates: int = 0,
             overrides: dict | None = None,
             on_update: Callable[[dict], None] | None = None) -> PretrainResult:
    """Pretrain (or continue pretraining) an ECG-FM-architecture encoder on ``sources``.

    ``max_updates`` is the run's total when resuming (``resume`` with a checkpoint in ``out_dir``)
    and the number of updates to add when continuing from ``init`` (whose update count carries on,
    so the Gumbel temperature schedule continues where that file left it).
    ``warmup_updates`` ramps the learning rate linearly from 0 (the recipe has none: it starts from a
    fixed 5e-5 with 1024-segment batches; small batches at a higher rate are steadier with one).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    dev = resolve_device(device)
    last = out_dir / "checkpoint_last.pt"
    resumed = resume and last.exists()
    model, opt_state, updates, history, seconds = build_model(preset, init, last if resumed else None,
                                                              overrides or {})
    model.to(dev).train()
    stop_at = max_updates if resumed or not init else updates + max_updates
    first_update = updates
    cfg = model.cfg
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.eps,
                                  weight_decay=cfg.weight_decay)
    if opt_state is not None:
        optimizer.load_state_dict(opt_state)
        for group in optimizer.param_groups:  # the configured lr wins over the one saved with the state
            group["lr"] = cfg.lr
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if dev.type == "cuda" else nullcontext()
    stream = PairStream(list(sources), seed=seed + updates, noise_std=noise_std, random_offset=random_offset,
                        max_pairs_per_record=max_pairs_per_record)
    rng = np.random.default_rng(seed + updates)
    enc_cfg = model.encoder_model.cfg
    steps = enc_cfg.tokens_for(2500)
    train_flops = 3 * flops_per_segment(enc_cfg)  # forward + backward ≈ 3 × forward
    deadline = time.monotonic() + max_minutes * 60 if max_minutes else None
    started = time.perf_counter()
    window_start, window_segments = started, 0
    batches = stream.batches(pairs_per_batch, cfg.mask_leads_prob)
    pinned = dev.type == "cuda"

    def to_device(array: np.ndarray) -> torch.Tensor:
        # From pinned memory the copy is asynchronous: the host prepares the next batch meanwhile.
        t = torch.from_numpy(array)
        return (t.pin_memory() if pinned else t).to(dev, non_blocking=True)

    # Nothing in an update reads a device value back (no .item(), .any() or boolean-mask gathers):
    # the host runs ahead of the GPU until a logging step.
    while updates < stop_at and (deadline is None or time.monotonic() < deadline):
        batch, records = next(batches)
        source = to_device(batch)
        mask_np = span_mask(len(batch), steps, mask_prob=cfg.mask_prob, mask_length=cfg.mask_length,
                            min_masks=cfg.min_masks, rng=rng)
        mask, positions = to_device(mask_np), to_device(masked_positions(mask_np))
        record_ids = to_device(records)
        if warmup_updates:
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * min(1.0, (updates - first_update + 1) / warmup_updates)
        with autocast:
            out = model(source, mask, record_ids, updates, positions=positions)
        optimizer.zero_grad(set_to_none=True)
        out["loss"].backward()
        optimizer.step()
        updates += 1
        window_segments += len(source)
        if updates % log_every == 0 or updates == stop_at:
            if dev.type == "cuda":
                torch.cuda.synchronize()
            now = time.perf_counter()
            rate = window_segments / (now - window_start)
            row = {"update": updates, "loss": out["loss"].item(), "segments_per_s": rate,
                   "temperature": cfg.temperature(updates), "lr": optimizer.param_groups[0]["lr"],
                   **{k: float(out[k]) for k in ("infonce", "diversity", "feature_penalty", "cmsc",
                                                   "accuracy", "perplexity")}}
            if dev.type == "cuda":
                row["mfu"] = rate * train_flops / H100_BF16_DENSE_FLOPS
            history.append(row)
            window_start, window_segments = now, 0
            if on_update:
                on_update(row)
        if updates % save_every == 0:
            save_pretraining_checkpoint(last, model, optimizer, num_updates=updates, epoch=0, history=history,
                                        seconds=seconds + time.perf_counter() - started,
                                        warmup_updates=warmup_updates)
    elapsed = time.perf_counter() - started
    save_pretraining_checkpoint(last, model, optimizer, num_updates=updates, epoch=0, history=history,
                                seconds=seconds + elapsed, warmup_updates=warmup_updates)
    curve = plot_curves(history, out_dir / "loss_curves.png")
    done = sum(r["segments_per_s"] for r in history[-5:]) / max(1, len(history[-5:])) if history else 0.0
    return PretrainResult(last, curve, updates, seconds + elapsed, done, history, dict(stream.stats))


def plot_curves(history: list[dict], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    if history:
        x = [r["update"] for r in history]
        for key in ("loss", "infonce", "cmsc"):
            axes[0].plot(x, [r[key] for r in history], label=key)
        axes[1].plot(x, [r["accuracy"] for r in history], label="masked-step accuracy")
        axes[1].plot(x, [r["diversity"] for r in history], label="diversity penalty")
        axes[2].plot(x, [r["segments_per_s"] for r in history], label="segments/s")
    titles = ("losses (per masked step)", "InfoNCE accuracy and codebook diversity", "throughput")
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("update")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
