"""ECG-FM as an encoder: ``Encoder`` (the network of ``embedder/model.py`` with its identity and
contract), ``load_ecgfm`` for fairseq-signals checkpoint files, ``load_bundled`` for the bundled
ecg-atlas-small-v1, and ``KIND``, this family's entry in ``resolver.KINDS``.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch

from ecg_atlas.errors import AtlasError, CheckpointError

from .. import weights
from ..checkpoint import FINETUNED, ResolvedCheckpoint, load_checkpoint
from ..contract import EncoderContract, ecgfm_contract
from ..model import ECGFM, PRESETS, ECGFMConfig, attention_saliency, init_weights, pool
from ..preprocessing import prepare
from .base import UNTRAINED_NOTICE, BaseEncoder, EncoderKind, quantize_linear_int8, untrained_contract

#: Opt-in faster CPU modes (benchmarks/encoder.py measures speed and cosine to fp32 for each).
FAST_MODES = ("int8", "compile")
ECGFM_WEIGHT_LICENCE = "MIT (bowang-lab/ECG-FM; the weights are released with the repository)"


def _quantize_int8(model: ECGFM) -> ECGFM:
    """ECG-FM's int8 mode: q/k/v fused into one projection, then dynamic int8 on every linear
    layer (94 % of the FLOPs); conv, norms and attention stay float32.

    Weights are packed for oneDNN when this torch has it: on AVX2 CPUs its int8 GEMM measured
    ~4–7 % faster than FBGEMM's in this network (BENCHMARKS.md). Packed weights carry their
    backend, so the process-wide engine is only switched while packing, then restored.
    """
    for layer in model.encoder.layers:
        layer.self_attn.fuse_qkv()
    return quantize_linear_int8(model)


class Encoder(BaseEncoder):
    """A ready-to-run ECG-FM(-architecture) encoder with its identity and contract."""

    fast_modes = FAST_MODES

    def __init__(self, model: ECGFM, *, model_id: str, checkpoint_sha256: str, label_names=(),
                 device: str | torch.device = "cpu", dtype: str = "auto", source: str = "",
                 fast: str | None = None, contract: EncoderContract | None = None, notice: str = ""):
        self._cfg = model.cfg
        if contract is None:
            contract = default_ecgfm_contract(model.cfg)
        super().__init__(model, contract=contract, model_id=model_id, checkpoint_sha256=checkpoint_sha256,
                         device=device, dtype=dtype, source=source, fast=fast, notice=notice)
        self.label_names = tuple(label_names)

    def _ready(self, network: ECGFM) -> ECGFM:
        network.prepare_for_inference()
        # CPU: the positional conv through the FFT (~5 % faster end to end at fp32, within 1e-6 of
        # the direct convolution; the parity tests run this path). GPUs and bf16 keep the direct conv.
        network.conv_pos.use_fft = self.device.type == "cpu" and self.dtype == "float32"
        return network

    def _float32_modules(self) -> set[torch.nn.Module]:
        # classify(): the head runs in float32 on the pooled float32 vector (bf16 logits were off
        # by up to 0.044 in probability)
        return {self.model.proj} if self.model.proj is not None else set()

    def _cast_weights(self, dtype: torch.dtype) -> None:
        super()._cast_weights(dtype)
        conv_pos = self.model.conv_pos  # its folded weight g·v/‖v‖ (computed in float32) and bias
        conv_pos._folded = conv_pos._folded.to(dtype)
        conv_pos.bias.data = conv_pos.bias.data.to(dtype)

    def _fast_runner(self, fast: str | None):
        if fast == "int8":
            self.model = _quantize_int8(self.model)
            return self.model
        return super()._fast_runner(fast)

    # -- identity -------------------------------------------------------------------------------
    @property
    def config(self) -> ECGFMConfig:
        return self._cfg

    @property
    def can_classify(self) -> bool:
        return self.model.proj is not None

    def describe(self) -> dict:
        return {**super().describe(), "layers": self.config.encoder_layers, "heads": self.config.heads}

    @property
    def preprocessing(self):
        return prepare

    def random_twin(self, seed: int = 0) -> "Encoder":
        cfg = dataclasses.replace(self.config, num_labels=0)
        return Encoder(init_weights(ECGFM(cfg), seed=seed),
                       model_id=f"random-init-{cfg.encoder_layers}x{cfg.embed_dim}-seed{seed}",
                       checkpoint_sha256="none", device=self.device, source="random-init baseline",
                       contract=untrained_contract(self.contract), notice=UNTRAINED_NOTICE)

    # -- inference ------------------------------------------------------------------------------
    def _min_samples(self) -> int:
        return 2 * sum(k for _, k, _ in self.config.conv_layers)

    def _tokens(self, t: torch.Tensor) -> torch.Tensor:
        return self._run(t)["x"]

    def _pool(self, tokens: torch.Tensor) -> torch.Tensor:
        """ECG-FM pooling: sum over time / count of non-zero values, float32."""
        return pool(tokens.float())

    def forward(self, x, *, need_weights: bool = False) -> dict[str, torch.Tensor]:
        t, _ = self._prepare(x)
        with torch.inference_mode(), self._autocast():
            return self._run(t, need_weights=need_weights)

    def saliency(self, x):
        """(B, 12, N) → (B, T): last layer's head-averaged attention, max over keys (spec §11)."""
        t, as_numpy = self._prepare(x)
        with torch.inference_mode(), self._autocast():
            attn = self._run(t, need_weights=True)["attn"]
            return self._out(attention_saliency(attn[:, -1]).float(), as_numpy)

    def classify(self, x):
        """(B, 12, N) → (B, n_labels) sigmoid probabilities; finetuned checkpoints only."""
        if not self.can_classify:
            raise AtlasError("this encoder has no classifier head: classify() needs a finetuned "
                             "ECG-FM checkpoint (ecg_transformer_classifier)")
        t, as_numpy = self._prepare(x)
        with torch.inference_mode():
            with self._autocast():
                pooled = pool(self._run(t)["x"].float())
            return self._out(torch.sigmoid(self.model.proj(pooled)), as_numpy)  # float32 head


def default_ecgfm_contract(cfg: ECGFMConfig) -> EncoderContract:
    """ECG-FM's contract for a network of shape ``cfg`` with ECG-FM's own weights."""
    return ecgfm_contract(
        architecture=(f"wav2vec 2.0-style transformer (ECG-FM network, plain PyTorch): {cfg.encoder_layers} "
                      f"layers x {cfg.embed_dim}, {cfg.heads} heads, FFN {cfg.ffn_dim}"),
        dim=cfg.embed_dim, weight_licence=ECGFM_WEIGHT_LICENCE, source="hf:wanglab/ecg-fm")


def load_ecgfm(checkpoint: str | os.PathLike, device: str = "cpu", dtype: str = "auto", *,
               revision: str | None = None, expected_sha256: str | None = None,
               fast: str | None = None, resolved=None, raw=None) -> Encoder:
    """Load an ECG-FM checkpoint (fairseq-signals layout) as an :class:`Encoder`."""
    loaded = load_checkpoint(checkpoint, revision=revision, expected_sha256=expected_sha256,
                             resolved=resolved, raw=raw)
    del raw
    cfg = loaded.model.cfg
    flavour = "finetuned" if loaded.flavour == FINETUNED else "pretrained"
    model_id = f"ecg-fm-{flavour}-{cfg.encoder_layers}x{cfg.embed_dim}"
    return Encoder(loaded.model, model_id=model_id, checkpoint_sha256=loaded.sha256,
                   label_names=loaded.label_names, device=device, dtype=dtype, source=loaded.name, fast=fast)


def load_bundled(**kwargs) -> Encoder:
    """ecg-atlas-small-v1, the encoder shipped in the package (``weights``; sha256 pinned)."""
    path = weights.bundled_path()
    if not path.is_file():
        raise CheckpointError(f"the bundled encoder file is missing from this installation ({path}); "
                              f"reinstall ecg-atlas or pass --checkpoint")
    encoder = load_ecgfm(path, expected_sha256=weights.BUNDLED_SHA256, **kwargs)
    encoder.model_id = weights.BUNDLED_NAME
    encoder.source = weights.BUNDLED_NAME
    encoder.extra_notice = weights.bundled_notice()
    encoder.contract = dataclasses.replace(
        encoder.contract, name=weights.BUNDLED_NAME, source="bundled (embedder/bundled/)",
        weight_licence="MIT (ECG Atlas); trained on CC BY 4.0 / ODC-By 1.0 ECGs (embedder/bundled/MODEL_CARD.md)",
        citation="ECG Atlas, embedder/bundled/MODEL_CARD.md; architecture and objective: " + encoder.contract.citation)
    return encoder


def random_ecgfm(preset: str = "base", *, seed: int = 0, **kwargs) -> Encoder:
    """An untrained ECG-FM-architecture encoder of a ``model.PRESETS`` shape."""
    cfg = PRESETS[preset]
    return Encoder(init_weights(ECGFM(cfg), seed=seed), model_id=f"random-init-{preset}-seed{seed}",
                   checkpoint_sha256="none", source=f"random:{preset}", notice=UNTRAINED_NOTICE,
                   contract=untrained_contract(default_ecgfm_contract(cfg)), **kwargs)


def _from_file(resolved: ResolvedCheckpoint, raw: Any, **kwargs) -> Encoder:
    return load_ecgfm(resolved.name, resolved=resolved, raw=raw, **kwargs)


KIND = EncoderKind(
    name="ECG-FM", presets=tuple(PRESETS), random=random_ecgfm,
    claims=lambda raw: isinstance(raw, dict) and "model" in raw, from_file=_from_file,
    file_layout="a fairseq-signals ECG-FM checkpoint is a dict with 'cfg' and 'model'")
