"""ECG-FM's pretraining objective (ecgfm_spec.md §8): wav2vec 2.0 + CMSC + random lead masking.

* wav2vec 2.0: spans of the projected conv tokens are replaced by ``mask_emb``; the transformer must
  pick, for each masked step, the Gumbel-quantised *unmasked* feature of that step among
  ``num_negatives`` distractors drawn from the other masked steps of the same segment (InfoNCE over
  cosine similarity / ``logit_temp``); plus a codebook diversity penalty and a conv-feature L2
  penalty (``loss_weights``).
* CMSC: the two adjacent 5-s segments of one recording should pool to nearby vectors: a symmetric
  cross-entropy over the (segment 0 × segment 1) cosine-similarity matrix / ``cmsc_temp``.
* RLM (random lead masking) lives with the data (data.py): it changes inputs, not the loss.

Module names (``mask_emb``, ``quantizer.vars``, ``quantizer.weight_proj``, ``project_q``,
``final_proj``) are the reference's, so checkpoints we write read back in fairseq-signals too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..model import ECGFM, ECGFMConfig, pool


@dataclass(frozen=True)
class PretrainConfig:
    """The recipe's values (w2v_cmsc_rlm.yaml); sizes scale with the encoder preset."""

    mask_prob: float = 0.65
    mask_length: int = 10
    min_masks: int = 2
    latent_vars: int = 320
    latent_groups: int = 2
    final_dim: int = 256
    latent_temp: tuple[float, float, float] = (2.0, 0.5, 0.999995)  # start, floor, decay per update
    logit_temp: float = 0.1
    num_negatives: int = 100
    diversity_weight: float = 0.1
    feature_penalty_weight: float = 10.0
    cmsc_weight: float = 1.0
    cmsc_temp: float = 0.1
    dropout_features: float = 0.1
    feature_grad_mult: float = 0.1
    mask_leads_prob: float = 0.5
    lr: float = 5e-5
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    weight_decay: float = 0.01

    def temperature(self, num_updates: int) -> float:
        start, floor, decay = self.latent_temp
        return max(start * decay**num_updates, floor)


def span_mask(batch: int, steps: int, *, mask_prob: float, mask_length: int, min_masks: int,
              rng: np.random.Generator) -> np.ndarray:
    """wav2vec 2.0 static span masking: (batch, steps) bool, the same number of masked steps per row.

    ``int(mask_prob · steps / mask_length + U[0,1))`` spans (at least ``min_masks``) of
    ``mask_length`` steps start at distinct random positions; spans may overlap, so ≈ 49 % of the
    steps end up masked with the recipe's values. Rows are then trimmed at random to the smallest
    count so the loss can treat the batch as one tensor.
    """
    num_spans = max(min_masks, int(mask_prob * steps / mask_length + rng.random()))
    span = min(mask_length, steps - 1)
    num_spans = min(num_spans, steps - span)
    chosen = []
    for _ in range(batch):
        starts = rng.choice(steps - span, num_spans, replace=False)
        chosen.append(np.unique((starts[:, None] + np.arange(span)[None, :]).ravel()))
    keep = min(len(c) for c in chosen)
    mask = np.zeros((batch, steps), dtype=bool)
    for row, idx in enumerate(chosen):
        mask[row, rng.choice(idx, keep, replace=False) if len(idx) > keep else idx] = True
    return mask


def masked_positions(mask: np.ndarray) -> np.ndarray:
    """(B, n_masked) int64 positions of a ``span_mask`` (every row masks as many steps), in order:
    computed on the host, so the update loop gathers them without a device sync."""
    return np.nonzero(mask)[1].reshape(len(mask), -1).astype(np.int64)


def _take_steps(t: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    """t (B, T, C) at positions (B, M) → (B, M, C): what ``t[mask]`` gives, with no data-dependent shape."""
    return torch.gather(t, 1, positions.unsqueeze(-1).expand(-1, -1, t.shape[-1]))


class GumbelQuantizer(nn.Module):
    """``groups`` codebooks of ``num_vars`` entries; straight-through hard Gumbel-softmax."""

    def __init__(self, dim: int, num_vars: int, groups: int, vq_dim: int):
        super().__init__()
        if vq_dim % groups:
            raise ValueError(f"vq_dim {vq_dim} must be divisible by {groups} groups")
        self.num_vars, self.groups = num_vars, groups
        self.vars = nn.Parameter(torch.empty(1, groups * num_vars, vq_dim // groups).uniform_())
        self.weight_proj = nn.Linear(dim, groups * num_vars)
        nn.init.normal_(self.weight_proj.weight, mean=0.0, std=1.0)
        nn.init.zeros_(self.weight_proj.bias)

    def forward(self, x: torch.Tensor, tau: float) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, dim) → (quantised (N, vq_dim), codebook perplexity summed over groups)."""
        n = x.shape[0]
        logits = self.weight_proj(x).float().view(n, self.groups, self.num_vars)
        avg_probs = logits.softmax(dim=-1).mean(dim=0)  # (groups, V): soft usage of each code
        perplexity = torch.exp(-(avg_probs * torch.log(avg_probs + 1e-7)).sum(dim=-1)).sum()
        if self.training:
            onehot = F.gumbel_softmax(logits, tau=tau, hard=True, dim=-1)
        else:
            onehot = F.one_hot(logits.argmax(dim=-1), self.num_vars).float()
        codebooks = self.vars.view(self.groups, self.num_vars, -1)
        quantised = torch.einsum("ngv,gvd->ngd", onehot.type_as(codebooks), codebooks)
        return quantised.reshape(n, -1).type_as(x), perplexity


def sample_negatives(y: torch.Tensor, num: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """For y (B, T', C), ``num`` distractors per step from the *other* masked steps of the same row.

    Returns (num, B, T', C). Drawn uniformly from T' − 1 candidates (the step itself is skipped).
    """
    batch, steps, dim = y.shape
    if steps < 2:
        raise ValueError("need at least two masked steps per segment to draw negatives")
    idx = torch.randint(0, steps - 1, (batch, steps, num), generator=generator, device=y.device)
    own = torch.arange(steps, device=y.device).view(1, steps, 1)
    idx = idx + (idx >= own).long()  # skip the positive itself
    flat = idx + torch.arange(batch, device=y.device).view(batch, 1, 1) * steps
    negs = y.reshape(batch * steps, dim)[flat.view(-1)].view(batch, steps, num, dim)
    return negs.permute(2, 0, 1, 3)


def infonce_logits(x: torch.Tensor, y: torch.Tensor, negatives: torch.Tensor, temp: float) -> torch.Tensor:
    """Cosine similarity of x (B, T', C) to [y; negatives] / temp → (B·T', 1 + num), positive first.

    A distractor that equals the positive exactly (a repeated code) gets −inf, as in the reference.
    """
    targets = torch.cat([y.unsqueeze(0), negatives], dim=0)  # (1 + num, B, T', C)
    logits = F.cosine_similarity(x.float().unsqueeze(0), targets.float(), dim=-1) / temp
    same = (negatives == y.unsqueeze(0)).all(dim=-1)
    # masked_fill, not `if same.any(): logits[same] = ...`: neither reads a value back to the host
    excluded = torch.cat([torch.zeros_like(same[:1]), same])
    logits = logits.masked_fill(excluded, float("-inf"))
    return logits.permute(1, 2, 0).reshape(-1, targets.shape[0])


def cmsc_loss(first: torch.Tensor, second: torch.Tensor, record_ids: torch.Tensor, temp: float) -> torch.Tensor:
    """Symmetric contrastive loss between pooled segment-0 and segment-1 vectors (P, D) each.

    Entries whose rows come from the same recording (``record_ids``) are the positives; with several
    positives in a row the loss averages their log-probabilities.
    """
    a, b = F.normalize(first.float(), dim=-1), F.normalize(second.float(), dim=-1)
    sim = a @ b.T / temp
    positive = (record_ids.view(-1, 1) == record_ids.view(1, -1)).float()

    def directed(logits: torch.Tensor) -> torch.Tensor:
        log_p = logits.log_softmax(dim=-1)
        return -((log_p * positive).sum(dim=-1) / positive.sum(dim=-1)).mean()

    return (directed(sim) + directed(sim.T)) / 2


class PretrainingModel(nn.Module):
    """The encoder plus wav2vec 2.0's pretraining heads, under the reference's parameter names."""

    def __init__(self, encoder_cfg: ECGFMConfig, cfg: PretrainConfig, encoder: ECGFM | None = None):
        super().__init__()
        self.cfg = cfg
        self.encoder_model = encoder if encoder is not None else ECGFM(encoder_cfg)
        dim, conv_dim = encoder_cfg.embed_dim, encoder_cfg.conv_dim
        self.mask_emb = nn.Parameter(torch.empty(dim).uniform_())
        self.quantizer = GumbelQuantizer(conv_dim, cfg.latent_vars, cfg.latent_groups, cfg.final_dim)
        self.project_q = nn.Linear(cfg.final_dim, cfg.final_dim)
        self.final_proj = nn.Linear(dim, cfg.final_dim)

    def forward(self, source: torch.Tensor, mask: torch.Tensor, record_ids: torch.Tensor,
                num_updates: int, generator: torch.Generator | None = None, *,
                positions: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """source (2P, 12, N): rows 0..P−1 are segment 0 of P recordings, rows P..2P−1 segment 1.
        ``positions``: ``masked_positions(mask)`` on the device (the training loop passes it; without
        it they are found from ``mask``, which waits for the device).

        Returns the total loss (per masked step, the reference's normalisation) and its parts.
        """
        cfg = self.cfg
        out = self.encoder_model(source, mask=mask, mask_emb=self.mask_emb,
                                 feature_grad_mult=cfg.feature_grad_mult)
        batch = out["x"].shape[0]
        feature_penalty = out["conv"].float().pow(2).mean()
        unmasked = F.dropout(out["features"], cfg.dropout_features, self.training)
        if positions is None:
            positions = mask.nonzero()[:, 1].view(batch, -1)
        y = _take_steps(unmasked, positions)
        n_masked = y.shape[1]
        y, perplexity = self.quantizer(y.reshape(-1, y.shape[-1]), cfg.temperature(num_updates))
        y = self.project_q(y).view(batch, n_masked, -1)
        x = self.final_proj(_take_steps(out["x"], positions))
        negatives = sample_negatives(y, min(cfg.num_negatives, max(n_masked - 1, 1)), generator)
        logits = infonce_logits(x, y, negatives, cfg.logit_temp)
        infonce = F.cross_entropy(logits, torch.zeros(len(logits), dtype=torch.long, device=logits.device))
        n_codes = cfg.latent_vars * cfg.latent_groups
        diversity = (n_codes - perplexity) / n_codes
        pairs = batch // 2
        pooled = pool(out["x"])
        cmsc = cmsc_loss(pooled[:pairs], pooled[pairs:2 * pairs], record_ids, cfg.cmsc_temp)
        loss = (infonce + cfg.diversity_weight * diversity + cfg.feature_penalty_weight * feature_penalty
                + cfg.cmsc_weight * cmsc)
        with torch.no_grad():
            accuracy = (logits.argmax(dim=-1) == 0).float().mean()
        return {"loss": loss, "infonce": infonce.detach(), "diversity": diversity.detach(),
                "feature_penalty": feature_penalty.detach(), "cmsc": cmsc.detach(),
                "accuracy": accuracy, "perplexity": perplexity.detach(), "masked_steps": n_masked * batch}


def scaled_pretrain_config(encoder_cfg: ECGFMConfig, **overrides) -> PretrainConfig:
    """Recipe values with quantiser sizes scaled to a smaller encoder (base keeps 320 × 2, 256)."""
    if encoder_cfg.embed_dim >= 768:
        return PretrainConfig(**overrides)
    final_dim = max(32, encoder_cfg.conv_dim)
    latent_vars = max(16, int(320 * math.sqrt(encoder_cfg.embed_dim / 768)))
    return PretrainConfig(**{"final_dim": final_dim, "latent_vars": latent_vars, **overrides})
