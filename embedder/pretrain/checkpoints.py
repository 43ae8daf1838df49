"""Pretraining checkpoints in the fairseq-signals layout (ecgfm_spec.md §4).

Files we write have the reference's top-level keys (``args, cfg, model, criterion,
optimizer_history, task_state, extra_state, last_optimizer_state``), its ``cfg["model"]`` field names
and its state-dict key names, so our loader and fairseq-signals both read them. Resuming restores
the optimizer and the update count; continuing from an ECG-FM file keeps its pretraining heads when
present and starts a fresh optimizer (the reference's Adam state is keyed by its own parameter
order, which we do not rely on).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from pathlib import Path

import torch

from ecg_atlas.atomic import write_atomic
from ecg_atlas.errors import CheckpointError

from ..checkpoint import (
    PRETRAINED,
    ResolvedCheckpoint,
    config_from_checkpoint,
    detect_flavour,
    load_state,
    read_checkpoint,
    resolve_checkpoint,
    to_our_names,
)
from ..model import ECGFM, ECGFMConfig
from .objective import PretrainConfig, PretrainingModel

#: our encoder names → the reference's (the inverse of checkpoint.POS_CONV_KEYS, new spelling)
TO_FAIRSEQ = {
    "conv_pos.weight_g": "conv_pos.pos_conv.0.parametrizations.weight.original0",
    "conv_pos.weight_v": "conv_pos.pos_conv.0.parametrizations.weight.original1",
    "conv_pos.bias": "conv_pos.pos_conv.0.bias",
}
HEAD_KEYS = ("mask_emb", "quantizer.vars", "quantizer.weight_proj.weight", "quantizer.weight_proj.bias",
             "project_q.weight", "project_q.bias", "final_proj.weight", "final_proj.bias")


def fairseq_state_dict(model: PretrainingModel) -> OrderedDict[str, torch.Tensor]:
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    state["mask_emb"] = model.mask_emb.detach().cpu()
    for key, tensor in model.encoder_model.state_dict().items():
        if key.startswith("proj."):
            continue  # a classifier head has no place in a pretraining checkpoint
        state[TO_FAIRSEQ.get(key, key)] = tensor.detach().cpu()
    for key in HEAD_KEYS[1:]:
        state[key] = model.get_parameter(key).detach().cpu()
    return state


def fairseq_model_cfg(enc: ECGFMConfig, cfg: PretrainConfig) -> dict:
    layers = ", ".join(f"({d}, {k}, {s})" for d, k, s in enc.conv_layers)
    return {
        "_name": PRETRAINED, "normalize": False, "filter": False,
        "encoder_layers": enc.encoder_layers, "encoder_embed_dim": enc.embed_dim,
        "encoder_ffn_embed_dim": enc.ffn_dim, "encoder_attention_heads": enc.heads,
        "layer_norm_first": False, "dropout": enc.dropout, "attention_dropout": enc.attention_dropout,
        "activation_dropout": enc.activation_dropout, "encoder_layerdrop": 0.0,
        "dropout_input": enc.dropout_input, "dropout_features": cfg.dropout_features,
        "apply_mask": True, "mask_length": cfg.mask_length, "mask_prob": cfg.mask_prob,
        "mask_selection": "static", "extractor_mode": "default", "conv_feature_layers": f"[{layers}]",
        "in_d": enc.in_d, "conv_bias": enc.conv_bias, "feature_grad_mult": cfg.feature_grad_mult,
        "conv_pos": enc.conv_pos, "conv_pos_groups": enc.conv_pos_groups, "logit_temp": cfg.logit_temp,
        "quantize_targets": True, "quantize_input": False, "latent_vars": cfg.latent_vars,
        "latent_groups": cfg.latent_groups, "latent_dim": 0, "final_dim": cfg.final_dim,
        "num_negatives": cfg.num_negatives, "cross_sample_negatives": 0, "codebook_negatives": 0,
        "latent_temp": list(cfg.latent_temp),
    }


def save_pretraining_checkpoint(path: Path, model: PretrainingModel, optimizer: torch.optim.Optimizer,
                                *, num_updates: int, epoch: int, history: list[dict], seconds: float,
                                warmup_updates: int = 0) -> Path:
    """Write all or nothing (``ecg_atlas.atomic.write_atomic``): a killed run never leaves half a checkpoint."""
    cfg = model.cfg
    payload = {
        "args": None,
        "cfg": {
            "_name": None,
            "common": {"seed": 1, "fp16": False},
            "model": fairseq_model_cfg(model.encoder_model.cfg, cfg),
            "task": {"_name": "ecg_pretraining", "perturbation_mode": ["random_leads_masking"], "p": [1.0],
                     "mask_leads_selection": "random", "mask_leads_prob": cfg.mask_leads_prob,
                     "normalize": False, "filter": False, "enable_padding": True},
            "criterion": {"_name": "wav2vec2_with_cmsc", "infonce": True,
                          "loss_weights": [cfg.diversity_weight, cfg.feature_penalty_weight],
                          "cmsc_weight": cfg.cmsc_weight, "cmsc_temp": cfg.cmsc_temp},
            "optimization": {"lr": [cfg.lr], "max_update": num_updates},
            "optimizer": {"_name": "adam", "adam_betas": list(cfg.betas), "adam_eps": cfg.eps,
                          "weight_decay": cfg.weight_decay},
            "lr_scheduler": {"_name": "fixed", "warmup_updates": warmup_updates},
        },
        "model": fairseq_state_dict(model),
        "criterion": None,
        "optimizer_history": [{"criterion_name": "Wav2Vec2WithCMSCCriterion", "optimizer_name": "Adam",
                               "lr_scheduler_state": {"lr": cfg.lr}, "num_updates": num_updates}],
        "task_state": {},
        "extra_state": {"previous_training_time": seconds,
                        "train_iterator": {"version": 2, "epoch": epoch, "iterations_in_epoch": 0, "shuffle": True},
                        "ecg_atlas_history": history},
        "last_optimizer_state": optimizer.state_dict(),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: torch.save(payload, tmp))
    return path


def pretrain_config_from(model_cfg: dict, state: dict[str, torch.Tensor], base: PretrainConfig) -> PretrainConfig:
    """Quantiser sizes from the checkpoint (shapes win over cfg), recipe values otherwise."""
    if "quantizer.vars" not in state:
        return base
    _, codes, per_group = state["quantizer.vars"].shape
    groups = int(model_cfg.get("latent_groups", base.latent_groups))
    return PretrainConfig(**{**base.__dict__, "latent_groups": groups, "latent_vars": codes // groups,
                             "final_dim": per_group * groups})


def load_for_pretraining(spec: str | os.PathLike, base: PretrainConfig,
                         dropouts: dict[str, float]) -> tuple[PretrainingModel, dict | None, int, list[dict], float]:
    """Model (+ optimizer state, update count, loss history, seconds) from a pretrained checkpoint.

    Works for files we wrote (full resume) and for ECG-FM's released pretrained file (heads kept,
    fresh optimizer). Finetuned files have no pretraining heads: fresh heads are initialised.
    """
    resolved = resolve_checkpoint(spec)
    model_cfg, raw_state = read_checkpoint(resolved)
    flavour = detect_flavour(model_cfg, raw_state)
    state, _ignored = to_our_names(raw_state, flavour)
    state.pop("proj.weight", None)
    state.pop("proj.bias", None)
    enc_cfg = config_from_checkpoint(model_cfg, state)
    enc_cfg = ECGFMConfig(**{**enc_cfg.__dict__, "num_labels": 0, **dropouts})
    encoder = ECGFM(enc_cfg)
    load_state(encoder, {k: v.clone() for k, v in state.items()})
    cfg = pretrain_config_from(model_cfg, raw_state, base) if flavour == PRETRAINED else base
    model = PretrainingModel(enc_cfg, cfg, encoder=encoder)
    if flavour == PRETRAINED and all(k in raw_state for k in HEAD_KEYS):
        with torch.no_grad():
            for key in HEAD_KEYS:
                target = model.get_parameter(key)
                if target.shape != raw_state[key].shape:
                    raise CheckpointError(f"pretraining head '{key}' has shape {tuple(raw_state[key].shape)}, "
                                          f"expected {tuple(target.shape)}")
                target.copy_(raw_state[key])
    optimizer_state, updates, history, seconds = _training_state(resolved)
    return model, optimizer_state, updates, history, seconds


def _training_state(resolved: ResolvedCheckpoint) -> tuple[dict | None, int, list[dict], float]:
    raw = torch.load(resolved.path, map_location="cpu", weights_only=True, mmap=True)
    extra = raw.get("extra_state") or {}
    if "ecg_atlas_history" not in extra:  # not one of ours: continue pretraining, fresh optimizer
        return None, 0, [], 0.0
    updates = (raw.get("optimizer_history") or [{}])[-1].get("num_updates", 0)
    return raw.get("last_optimizer_state"), int(updates), list(extra["ecg_atlas_history"]), \
        float(extra.get("previous_training_time", 0.0))
