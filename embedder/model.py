"""The ECG-FM network (wav2vec 2.0 / CMSC encoder) in plain PyTorch.

Read top-down beside ecgfm_spec.md §3: conv feature extractor → LayerNorm → projection →
+ weight-normed convolutional positional embedding → LayerNorm → post-LN transformer layers →
(finetuned files) pooled linear head. Module and parameter names mirror the fairseq-signals state
dict, so the checkpoint mapping (checkpoint.py) only renames the weight-norm pair and strips the
finetuned prefix.
"""

from __future__ import annotations

import ast
import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from scipy.fft import next_fast_len
from torch import nn


@dataclass(frozen=True)
class ECGFMConfig:
    """Everything that shapes the forward pass (ecgfm_spec.md §2). Defaults = released base model."""

    in_d: int = 12
    conv_layers: tuple[tuple[int, int, int], ...] = ((256, 2, 2),) * 4  # (channels, kernel, stride)
    conv_bias: bool = False
    encoder_layers: int = 12
    embed_dim: int = 768
    ffn_dim: int = 3072
    heads: int = 12
    conv_pos: int = 128
    conv_pos_groups: int = 16
    layer_norm_eps: float = 1e-5
    num_labels: int = 0  # > 0: finetuned classifier head `proj`
    # Training-only regularisation (no-ops in eval mode; the pretraining recipe's values in §2).
    dropout: float = 0.0
    attention_dropout: float = 0.0
    activation_dropout: float = 0.0
    dropout_input: float = 0.0

    def __post_init__(self) -> None:
        if self.embed_dim % self.heads:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by {self.heads} attention heads")
        if self.embed_dim % self.conv_pos_groups:
            raise ValueError(f"embed_dim {self.embed_dim} is not divisible by conv_pos_groups {self.conv_pos_groups}")

    @property
    def conv_dim(self) -> int:
        return self.conv_layers[-1][0]

    def tokens_for(self, n_samples: int) -> int:
        """Sequence length the conv stack produces for ``n_samples`` input samples."""
        length = n_samples
        for _, kernel, stride in self.conv_layers:
            length = (length - kernel) // stride + 1
        return length


_LIST_TERM = re.compile(r"^\s*(\[.*\])\s*(?:\*\s*(\d+))?\s*$", re.S)


def parse_conv_layers(spec: str | list | tuple) -> tuple[tuple[int, int, int], ...]:
    """Parse fairseq's ``conv_feature_layers`` string (e.g. ``"[(256, 2, 2)] * 4"``) without eval.

    Accepts sums of list literals optionally repeated by an integer: ``"[(a,b,c)] * 2 + [(d,e,f)]"``.
    """
    if isinstance(spec, (list, tuple)):
        terms = [list(spec)]
    else:
        terms = []
        for part in _split_top_level_plus(str(spec)):
            match = _LIST_TERM.match(part)
            if not match:
                raise ValueError(f"cannot parse conv_feature_layers term {part!r}")
            items = ast.literal_eval(match.group(1))
            terms.append(list(items) * int(match.group(2) or 1))
    layers = tuple(tuple(int(v) for v in item) for term in terms for item in term)
    if not layers or any(len(item) != 3 for item in layers):
        raise ValueError(f"conv_feature_layers must be a list of (dim, kernel, stride), got {spec!r}")
    return layers  # type: ignore[return-value]


def _split_top_level_plus(text: str) -> list[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        elif ch == "+" and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return parts


class Fp32GroupNorm(nn.GroupNorm):
    """GroupNorm computed in float32 whatever the input dtype (as the reference does)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.group_norm(x.float(), self.num_groups, self.weight.float(), self.bias.float(), self.eps)
        return out.type_as(x)


class ConvFeatureExtractor(nn.Module):
    """Strided 1-D convolutions over the 12 leads; GroupNorm (per channel) after the first only.

    Each block is Sequential(conv, dropout, [group norm], GELU) so that parameter names match the
    reference (``conv_layers.0.0.weight``, ``conv_layers.0.2.weight``).
    """

    def __init__(self, cfg: ECGFMConfig):
        super().__init__()
        blocks, in_ch = [], cfg.in_d
        for i, (out_ch, kernel, stride) in enumerate(cfg.conv_layers):
            conv = nn.Conv1d(in_ch, out_ch, kernel, stride=stride, bias=cfg.conv_bias)
            layers: list[nn.Module] = [conv, nn.Dropout(0.0)]
            if i == 0:
                layers.append(Fp32GroupNorm(out_ch, out_ch, eps=cfg.layer_norm_eps, affine=True))
            layers.append(nn.GELU())
            blocks.append(nn.Sequential(*layers))
            in_ch = out_ch
        self.conv_layers = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, leads, N) -> (B, C, T)
        for block in self.conv_layers:
            x = block(x)
        return x


class ConvPositionalEmbedding(nn.Module):
    """Grouped Conv1d with weight norm over the kernel taps (dim=2); even kernel → drop last step.

    The weight-norm pair is kept as explicit parameters ``weight_g`` (1, 1, K) and ``weight_v``
    (D, D/groups, K): weight = g · v / ‖v‖, the norm taken per tap over the other two axes.
    """

    def __init__(self, dim: int, kernel: int, groups: int):
        super().__init__()
        self.kernel, self.groups = kernel, groups
        self.weight_g = nn.Parameter(torch.empty(1, 1, kernel))
        self.weight_v = nn.Parameter(torch.empty(dim, dim // groups, kernel))
        self.bias = nn.Parameter(torch.zeros(dim))
        self._folded: torch.Tensor | None = None  # cached weight for inference (see fold())
        #: Convolve through the FFT (~10x fewer FLOPs for K=128 over 156 steps; differs from the
        #: direct convolution by float32 rounding, ~1e-6). Off here; the CPU Encoder turns it on.
        self.use_fft = False
        self._spectrum: tuple[int, torch.Tensor] | None = None  # (n_fft, (G, F, out, in) complex)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """wav2vec 2.0's init: v ~ N(0, 4 / (K·D)), g = ‖v‖ per tap, zero bias."""
        if self.weight_v.is_meta:
            return
        with torch.no_grad():
            std = math.sqrt(4.0 / (self.kernel * self.weight_v.shape[0]))
            self.weight_v.copy_(torch.randn(self.weight_v.shape, generator=generator) * std)
            self.weight_g.copy_(self.weight_v.norm(dim=(0, 1), keepdim=True))
            self.bias.zero_()

    def weight(self) -> torch.Tensor:
        if self._folded is not None:
            return self._folded
        norm = self.weight_v.norm(dim=(0, 1), keepdim=True)
        return self.weight_g * self.weight_v / norm

    def fold(self) -> None:
        """Cache g·v/‖v‖ once (inference): saves recomputing the norm on every call."""
        with torch.no_grad():
            self._folded, self._spectrum = None, None
            self._folded = self.weight().detach()

    def _apply(self, fn, recurse=True):  # keep the cache on the module's device/dtype
        super()._apply(fn, recurse)
        self._spectrum = None
        if self._folded is not None:
            self.fold()
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, D) -> (B, T, D)
        if self.use_fft and not self.training:
            return F.gelu(self._fft_conv(x.transpose(1, 2))).transpose(1, 2)
        y = F.conv1d(x.transpose(1, 2), self.weight(), self.bias, padding=self.kernel // 2, groups=self.groups)
        if self.kernel % 2 == 0:
            y = y[:, :, :-1]
        return F.gelu(y).transpose(1, 2)

    def _fft_conv(self, x: torch.Tensor) -> torch.Tensor:  # (B, D, T) -> (B, D, T)
        """The same grouped correlation as the direct path, as a product of spectra.

        Output step t of the direct path (padding K//2, last step dropped) is step t + K//2 - 1 of
        the full linear convolution of x with the reversed kernel, so an FFT of any length
        >= T + K - 1 (no wrap-around) reproduces it.
        """
        batch, dim, steps = x.shape
        groups, per_group = self.groups, dim // self.groups
        n_fft = next_fast_len(steps + self.kernel - 1, real=True)  # no wrap-around, 2·3·5-smooth
        cached = self._spectrum  # read once: encoder worker threads share the module
        if cached is None or cached[0] != n_fft:  # fold() and _apply() reset it
            spec = torch.fft.rfft(self.weight().detach().flip(-1), n=n_fft)  # (out, in, F)
            cached = (n_fft, spec.view(groups, per_group, per_group, -1).permute(0, 3, 1, 2).contiguous())
            self._spectrum = cached
        spec = cached[1]
        bins = spec.shape[1]
        xs = torch.fft.rfft(x, n=n_fft).view(batch, groups, per_group, bins).permute(1, 3, 2, 0)  # (G, F, in, B)
        ys = torch.matmul(spec, xs).permute(3, 0, 2, 1).reshape(batch, dim, bins)
        start = self.kernel // 2 - 1 if self.kernel % 2 == 0 else self.kernel // 2
        y = torch.fft.irfft(ys, n=n_fft)[:, :, start:start + steps]
        return y + self.bias[:, None]


class SelfAttention(nn.Module):
    """Multi-head self-attention with separate q/k/v/out projections (all with bias)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.dropout = dropout
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.q_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.qkv_proj: nn.Linear | None = None  # see fuse_qkv()

    def fuse_qkv(self) -> None:
        """Inference only: one (3·D × D) projection instead of three, so a quantised mode
        quantises each input once and runs one larger GEMM. The separate layers are removed."""
        dim = self.q_proj.in_features
        fused = nn.Linear(dim, 3 * dim, device=self.q_proj.weight.device, dtype=self.q_proj.weight.dtype)
        with torch.no_grad():
            fused.weight.copy_(torch.cat([self.q_proj.weight, self.k_proj.weight, self.v_proj.weight]))
            fused.bias.copy_(torch.cat([self.q_proj.bias, self.k_proj.bias, self.v_proj.bias]))
        self.qkv_proj = fused.requires_grad_(False)
        del self.q_proj, self.k_proj, self.v_proj

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch, steps, dim = x.shape

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, steps, self.heads, self.head_dim).transpose(1, 2)

        if self.qkv_proj is not None:
            q, k, v = self.qkv_proj(x).view(batch, steps, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        else:
            q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        if need_weights:
            # Explicit path (the reference's when weights are requested): scaled q, fp32 softmax.
            scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1)
            probs = F.softmax(scores, dim=-1, dtype=torch.float32)
            out = F.dropout(probs.type_as(v), self.dropout, self.training) @ v
            weights = probs.mean(dim=1)  # head-averaged (B, T, T), query × key
        else:
            out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
            weights = None
        out = out.transpose(1, 2).reshape(batch, steps, dim)
        return self.out_proj(out), weights


class TransformerLayer(nn.Module):
    """Post-LN block: x = LN(x + attn(x)); x = LN(x + fc2(GELU(fc1(x))))."""

    def __init__(self, cfg: ECGFMConfig):
        super().__init__()
        dim = cfg.embed_dim
        self.self_attn = SelfAttention(dim, cfg.heads, cfg.attention_dropout)
        self.dropout, self.activation_dropout = cfg.dropout, cfg.activation_dropout
        self.self_attn_layer_norm = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)
        self.fc1 = nn.Linear(dim, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, dim)
        self.final_layer_norm = nn.LayerNorm(dim, eps=cfg.layer_norm_eps)

    def forward(self, x: torch.Tensor, need_weights: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        attn, weights = self.self_attn(x, need_weights)
        x = self.self_attn_layer_norm(x + F.dropout(attn, self.dropout, self.training))
        hidden = F.gelu(self.fc1(x).float()).type_as(x)  # the reference computes this GELU in fp32
        hidden = F.dropout(hidden, self.activation_dropout, self.training)
        x = self.final_layer_norm(x + F.dropout(self.fc2(hidden), self.dropout, self.training))
        return x, weights


class TransformerStack(nn.Module):
    """``encoder.*`` in the checkpoint: positional conv, the pre-stack LayerNorm, the layers."""

    def __init__(self, cfg: ECGFMConfig):
        super().__init__()
        self.layer_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList(TransformerLayer(cfg) for _ in range(cfg.encoder_layers))


class ECGFM(nn.Module):
    """The ECG-FM encoder (+ optional classifier head). Input (B, 12, N) float32 preprocessed."""

    def __init__(self, cfg: ECGFMConfig):
        super().__init__()
        self.cfg = cfg
        self.feature_extractor = ConvFeatureExtractor(cfg)
        self.layer_norm = nn.LayerNorm(cfg.conv_dim, eps=cfg.layer_norm_eps)
        self.post_extract_proj = nn.Linear(cfg.conv_dim, cfg.embed_dim)
        self.conv_pos = ConvPositionalEmbedding(cfg.embed_dim, cfg.conv_pos, cfg.conv_pos_groups)
        self.encoder = TransformerStack(cfg)
        self.proj = nn.Linear(cfg.embed_dim, cfg.num_labels) if cfg.num_labels else None

    def prepare_for_inference(self) -> "ECGFM":
        """Eval mode, frozen, weight norm folded once. Call after moving to the device."""
        self.eval().requires_grad_(False)
        self.conv_pos.fold()
        return self

    def forward(
        self,
        source: torch.Tensor,
        *,
        need_weights: bool = False,
        return_stages: bool = False,
        mask: torch.Tensor | None = None,
        mask_emb: torch.Tensor | None = None,
        feature_grad_mult: float = 1.0,
    ) -> dict[str, torch.Tensor]:
        """Run the encoder. Returns ``{"x": (B, T, D), "features": (B, T, C), "conv": (B, C, T)}``
        (final output, LayerNorm'd conv features, raw conv features) plus, on request:

        * ``need_weights``: ``"attn"`` (B, L, T, T) head-averaged attention of every layer
          (explicit attention path; otherwise the fused SDPA kernel is used);
        * ``return_stages``: every intermediate activation named as in the parity files.
        Pretraining hooks: ``mask`` (B, T) bool replaces those projected steps by ``mask_emb``;
        ``feature_grad_mult`` scales the gradient reaching the conv extractor (0.1 in the recipe;
        0 runs it under ``no_grad``, as fine-tuning does).
        """
        stages: dict[str, torch.Tensor] = {}
        if feature_grad_mult == 0.0:  # the fine-tuning recipe: the conv extractor frozen, run without autograd
            with torch.no_grad():
                conv = self.feature_extractor(source)
        else:
            conv = self.feature_extractor(source)
            if self.training and feature_grad_mult != 1.0:
                conv = _GradScale.apply(conv, feature_grad_mult)
        features = self.layer_norm(conv.transpose(1, 2))
        x = F.dropout(self.post_extract_proj(features), self.cfg.dropout_input, self.training)
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1), mask_emb.to(x.dtype), x)
        pos = self.conv_pos(x)
        if return_stages:
            stages.update(feature_extractor_out=conv, features_ln=features, post_extract_proj=x, pos_conv_out=pos)
        x = x + pos
        if return_stages:
            stages["encoder_input"] = x
        x = F.dropout(self.encoder.layer_norm(x), self.cfg.dropout, self.training)
        if return_stages:
            stages["encoder_ln_out"] = x
        attn = []
        for i, layer in enumerate(self.encoder.layers):
            x, weights = layer(x, need_weights)
            if weights is not None:
                attn.append(weights)
            if return_stages:
                stages[f"layer_{i}"] = x
        out = {"x": x, "features": features, "conv": conv, **stages}
        if attn:
            out["attn"] = torch.stack(attn, dim=1)
        return out


class _GradScale(torch.autograd.Function):
    """Identity forward; gradient multiplied by ``scale`` (fairseq's GradMultiply)."""

    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return grad * ctx.scale, None


def pool(x: torch.Tensor) -> torch.Tensor:
    """ECG-FM's pooling: Σ_t x / #(x ≠ 0) per channel (guarded against an all-zero channel)."""
    count = (x != 0).sum(dim=1).clamp(min=1)
    return x.sum(dim=1) / count.to(x.dtype)


def attention_saliency(attn_last: torch.Tensor) -> torch.Tensor:
    """Spec §11: last layer's head-averaged attention, max over keys → (B, T)."""
    return attn_last.max(dim=-1).values


def init_weights(model: ECGFM, seed: int | None = None) -> ECGFM:
    """BERT-style random init (normal 0.02 linear weights, zero biases) as wav2vec 2.0 uses.

    Used for the random-init baselines and for pretraining from scratch.
    """
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * 0.02)
                module.bias.zero_()
            elif isinstance(module, nn.Conv1d):
                bound = 1 / math.sqrt(module.weight[0].numel())  # kaiming-normal-like scale
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * bound)
            elif isinstance(module, (nn.LayerNorm, nn.GroupNorm)):
                module.weight.fill_(1.0)
                module.bias.zero_()
    model.conv_pos.reset_parameters(gen)
    return model


PRESETS: dict[str, ECGFMConfig] = {
    # The released ECG-FM architecture (90.4 M encoder parameters).
    "base": ECGFMConfig(),
    # The parity files' TINY shape; handy for fast tests.
    "tiny": ECGFMConfig(conv_layers=((32, 2, 2),) * 4, encoder_layers=2, embed_dim=64, ffn_dim=128, heads=2),
    # Small enough to pretrain on a CPU and ship in the package (pretraining issue).
    "small": ECGFMConfig(conv_layers=((128, 2, 2),) * 4, encoder_layers=4, embed_dim=256, ffn_dim=1024, heads=4),
}


def flops_per_segment(cfg: ECGFMConfig, n_samples: int = 2500) -> float:
    """Forward FLOPs (2 per multiply-add) for one segment; 29.2 G for the base model at 2500."""
    total, length, in_ch = 0.0, n_samples, cfg.in_d
    for out_ch, kernel, stride in cfg.conv_layers:
        length = (length - kernel) // stride + 1
        total += 2 * length * out_ch * in_ch * kernel
        in_ch = out_ch
    t, d = length, cfg.embed_dim
    total += 2 * t * cfg.conv_dim * d  # post_extract_proj
    total += 2 * t * d * (d // cfg.conv_pos_groups) * cfg.conv_pos  # positional conv
    per_layer = 2 * t * d * d * 4 + 2 * 2 * t * t * d + 2 * 2 * t * d * cfg.ffn_dim
    return total + cfg.encoder_layers * per_layer


def config_fields(cfg: ECGFMConfig) -> dict:
    """Plain-dict view (for logs, Info, and writing checkpoints)."""
    return {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}


__all__ = [
    "ECGFM", "ECGFMConfig", "PRESETS", "attention_saliency", "config_fields", "flops_per_segment", "init_weights",
    "parse_conv_layers", "pool",
]
