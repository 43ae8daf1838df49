"""ECG-FM as an encoder: ``Encoder`` (the network of ``embedder/model.py`` with its identity and
contract), ``load_ecgfm`` for fairseq-signals checkpoint files, ``load_bundled`` for a release of
the bundled ecg-atlas-small encoder (``weights.RELEASES``), ``KIND``, this family's entry in
``resolver.KINDS``, and fine-tuning: ``RECIPE`` and ``ECGFMTrainable``
(``finetune_net.TrainableNetwork``), whose ``raw_layout`` is a fairseq-signals
``ecg_transformer_classifier`` file.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
from torch import nn

from ecg_atlas.errors import CheckpointError

from .. import weights
from ..checkpoint import FINETUNED, POS_CONV_KEYS, ResolvedCheckpoint, load_checkpoint, resolve_checkpoint
from ..contract import EncoderContract, ecgfm_contract
from ..finetune_net import ADAM, FIXED, TrainableNetwork, cpu_state, head_tensors
from ..model import ECGFM, PRESETS, ECGFMConfig, attention_saliency, init_weights, pool
from ..preprocessing import prepare
from .base import (
    UNTRAINED_NOTICE,
    BaseEncoder,
    EncoderKind,
    copy_weights,
    file_rebuild,
    quantize_linear_int8,
    untrained_contract,
)

#: Opt-in faster CPU modes (benchmarks/encoder.py measures speed and cosine to fp32 for each).
FAST_MODES = ("int8", "compile")
ECGFM_WEIGHT_LICENCE = "MIT (bowang-lab/ECG-FM; the weights are released with the repository)"

#: ECG-FM's fine-tuning recipe (ecgfm_spec.md §2 and §9).
RECIPE = {
    "family": "ECG-FM",
    "source": ("ECG-FM's fine-tuning config: fairseq-signals examples/w2v_cmsc/config/finetuning/ecg_transformer/"
               "diagnosis.yaml and wanglab/ecg-fm mimic_iv_ecg_finetuned.yaml (ecgfm_spec.md sections 2 and 9)"),
    "dropout": 0.0, "attention_dropout": 0.0, "activation_dropout": 0.1, "dropout_input": 0.0,
    "pooled_dropout": 0.0,  # final_dropout
    "frozen": ["feature_extractor: the convolutional feature extractor (feature_grad_mult 0: run under no_grad)"],
    "masking": "none (apply_mask False, mask_prob 0)",
    "optimizer": ADAM, "betas": (0.9, 0.98), "eps": 1e-8, "weight_decay": 0.0, "schedule": FIXED,
    "lr": 1e-5,
    "lr_published": 1e-6,
    "lr_note": ("the published fixed lr 1e-6 drives 320,000 updates at batch 256; over the few thousand updates "
                "of a short run it barely moves the weights, so the default is 1e-5, the lr HuBERT-ECG publishes "
                "for fine-tuning its wav2vec 2.0-family transformer at batch 64 (scripts/finetune.py --lr)"),
    "batch_size": 256, "max_update_published": 320_000,
    "loss": "BCE with logits, pos_weight = train negatives / positives per label",
}


class ECGFMTrainable(TrainableNetwork):
    """ECG-FM(-architecture) network, trainable: conv extractor frozen, fine-tuning dropouts."""

    family = "ECG-FM"

    def __init__(self, model: ECGFM, recipe: dict = RECIPE):
        super().__init__(model, dim=model.cfg.embed_dim, recipe=recipe, frozen=[model.feature_extractor])

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return pool(self.network(x, feature_grad_mult=0.0)["x"].float())

    def raw_layout(self, head: nn.Linear) -> dict:
        """A fairseq-signals ``ecg_transformer_classifier`` file: ``cfg.model`` + ``encoder.``-prefixed
        state, the head as ``proj`` (what ``checkpoint.load_checkpoint`` reads)."""
        cfg = self.network.cfg
        weight, bias = head_tensors(head, self.dim)
        to_fairseq = {ours: theirs for theirs, ours in POS_CONV_KEYS.items() if ".parametrizations." in theirs
                      or theirs.endswith(".bias")}
        state = {f"encoder.{to_fairseq.get(k, k)}": v for k, v in cpu_state(self.network).items()}
        state["proj.weight"], state["proj.bias"] = weight, bias
        layers = ", ".join(f"({d}, {k}, {s})" for d, k, s in cfg.conv_layers)
        model_cfg = {
            "_name": FINETUNED, "in_d": cfg.in_d, "conv_feature_layers": f"[{layers}]", "conv_bias": cfg.conv_bias,
            "extractor_mode": "default", "layer_norm_first": False, "encoder_layers": cfg.encoder_layers,
            "encoder_embed_dim": cfg.embed_dim, "encoder_ffn_embed_dim": cfg.ffn_dim,
            "encoder_attention_heads": cfg.heads, "conv_pos": cfg.conv_pos, "conv_pos_groups": cfg.conv_pos_groups,
            "num_labels": int(weight.shape[0]), "dropout": cfg.dropout, "attention_dropout": cfg.attention_dropout,
            "activation_dropout": cfg.activation_dropout, "dropout_input": cfg.dropout_input,
            "final_dropout": float(self.recipe["pooled_dropout"]), "feature_grad_mult": 0.0, "apply_mask": False,
        }
        return {"cfg": {"model": model_cfg}, "model": state}


def trainable_ecgfm(network: ECGFM, recipe: dict = RECIPE) -> ECGFMTrainable:
    """A fresh network of ``network``'s shape with the recipe's dropouts, holding its encoder weights
    (any classifier head ``proj`` left out)."""
    cfg = dataclasses.replace(network.cfg, num_labels=0, dropout=recipe["dropout"],
                              attention_dropout=recipe["attention_dropout"],
                              activation_dropout=recipe["activation_dropout"], dropout_input=recipe["dropout_input"])
    return ECGFMTrainable(copy_weights(network, ECGFM(cfg), skip=("proj.",)), recipe)


def network_from_raw(resolved: ResolvedCheckpoint, raw: Any) -> ECGFM:
    """A fresh float32 ECG-FM network from a fairseq-signals file's loaded object."""
    loaded = load_checkpoint(resolved.name, resolved=resolved, raw=raw).model
    return copy_weights(loaded, ECGFM(loaded.cfg))


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
                 fast: str | None = None, contract: EncoderContract | None = None, notice: str = "",
                 rebuild=None):
        self._cfg = model.cfg
        if contract is None:
            contract = default_ecgfm_contract(model.cfg)
        super().__init__(model, contract=contract, model_id=model_id, checkpoint_sha256=checkpoint_sha256,
                         device=device, dtype=dtype, source=source, fast=fast, notice=notice, rebuild=rebuild)
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
    def head(self) -> nn.Linear | None:
        return self.model.proj

    @property
    def can_classify(self) -> bool:
        return self.model.proj is not None

    def describe(self) -> dict:
        return {**super().describe(), "layers": self.config.encoder_layers, "heads": self.config.heads}

    @property
    def preprocessing(self):
        return prepare

    def random_twin(self, seed: int = 0) -> "Encoder":
        return random_like(self.config, seed=seed, device=self.device, contract=self.contract)

    def _trainable(self, network: ECGFM) -> ECGFMTrainable:
        return trainable_ecgfm(network)

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
    where = resolved or (lambda: resolve_checkpoint(loaded.name, revision=revision, expected_sha256=loaded.sha256))
    return Encoder(loaded.model, model_id=model_id, checkpoint_sha256=loaded.sha256,
                   label_names=loaded.label_names, device=device, dtype=dtype, source=loaded.name, fast=fast,
                   rebuild=file_rebuild(where, network_from_raw))


def load_bundled(release: weights.BundledRelease = weights.CURRENT, **kwargs) -> Encoder:
    """A release of the encoder shipped in the package (``weights.RELEASES``; sha256 pinned)."""
    path = weights.bundled_path(release)
    if not path.is_file():
        raise CheckpointError(f"the bundled encoder file {release.file} is missing from this installation "
                              f"({path}); reinstall ecg-atlas or pass --checkpoint")
    encoder = load_ecgfm(path, expected_sha256=release.sha256, **kwargs)
    encoder.model_id = release.name
    encoder.source = release.name
    encoder.extra_notice = weights.bundled_notice(release)
    encoder.contract = dataclasses.replace(
        encoder.contract, name=release.name, source=f"bundled (embedder/bundled/{release.file})",
        weight_licence=f"MIT (ECG Atlas); trained on CC BY 4.0 / ODC-By 1.0 ECGs (embedder/bundled/{release.card})",
        citation=f"ECG Atlas, embedder/bundled/{release.card}; architecture and objective: "
                 + encoder.contract.citation)
    return encoder


def random_like(cfg: ECGFMConfig, *, seed: int = 0, device: str | torch.device = "cpu",
                contract: EncoderContract | None = None) -> Encoder:
    """An untrained encoder of the architecture ``cfg`` (no classifier head): a probe's random-init
    baseline. ``contract``: the trained encoder's, relabelled as untrained (default: ECG-FM's)."""
    cfg = dataclasses.replace(cfg, num_labels=0)

    def fresh() -> ECGFM:
        return init_weights(ECGFM(cfg), seed=seed)

    return Encoder(fresh(), model_id=f"random-init-{cfg.encoder_layers}x{cfg.embed_dim}-seed{seed}",
                   checkpoint_sha256="none", device=device, source="random-init baseline",
                   contract=untrained_contract(contract or default_ecgfm_contract(cfg)), notice=UNTRAINED_NOTICE,
                   rebuild=fresh)


def random_ecgfm(preset: str = "base", *, seed: int = 0, **kwargs) -> Encoder:
    """An untrained ECG-FM-architecture encoder of a ``model.PRESETS`` shape."""
    cfg = PRESETS[preset]

    def fresh() -> ECGFM:
        return init_weights(ECGFM(cfg), seed=seed)

    return Encoder(fresh(), model_id=f"random-init-{preset}-seed{seed}",
                   checkpoint_sha256="none", source=f"random:{preset}", notice=UNTRAINED_NOTICE,
                   contract=untrained_contract(default_ecgfm_contract(cfg)), rebuild=fresh, **kwargs)


def _from_file(resolved: ResolvedCheckpoint, raw: Any, **kwargs) -> Encoder:
    return load_ecgfm(resolved.name, resolved=resolved, raw=raw, **kwargs)


KIND = EncoderKind(
    name="ECG-FM", presets=tuple(PRESETS), random=random_ecgfm,
    claims=lambda raw: isinstance(raw, dict) and "model" in raw, from_file=_from_file,
    file_layout="a fairseq-signals ECG-FM checkpoint is a dict with 'cfg' and 'model'", network=network_from_raw)
