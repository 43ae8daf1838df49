"""The public encoder: a loaded ECG-FM network plus its identity and input contract.

``load_encoder`` reads a checkpoint; ``Encoder`` runs it under ``torch.inference_mode`` on the
chosen device and dtype. Every method takes (B, 12, N) preprocessed segments as a NumPy array or a
torch tensor and answers in kind: NumPy in → NumPy out (float32), tensor in → tensor on the
encoder's device.
"""

from __future__ import annotations

import logging
import os
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from ecg_atlas.errors import AtlasError, CheckpointError

from .checkpoint import FINETUNED, load_checkpoint
from .model import ECGFM, PRESETS, ECGFMConfig, attention_saliency, init_weights, pool
from .recording import PREPROCESSING_VERSION, SEGMENT_SAMPLES, STANDARD_LEADS, TARGET_FS

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: Opt-in faster CPU modes (benchmarks/encoder.py measures speed and cosine to fp32 for each).
FAST_MODES = ("int8", "compile")


@dataclass(frozen=True)
class InputContract:
    """What the network expects; carried by the encoder so no caller has to guess (timm habit)."""

    leads: tuple[str, ...] = STANDARD_LEADS
    fs: int = TARGET_FS
    segment_samples: int = SEGMENT_SAMPLES
    preprocessing_version: str = PREPROCESSING_VERSION


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise AtlasError("device 'cuda' was requested but torch sees no CUDA GPU; use --device cpu or auto")
    return dev


def _quantize_int8(model: ECGFM) -> ECGFM:
    """Dynamic int8 on every linear layer (94 % of the FLOPs), weights per output channel, with
    q/k/v fused into one projection; conv, norms and attention stay float32.

    Weights are packed for oneDNN when this torch has it: on AVX2 CPUs its int8 GEMM measured
    ~4–7 % faster than FBGEMM's in this network (BENCHMARKS.md). Packed weights carry their
    backend, so the process-wide engine is only switched while packing, then restored.
    """
    import warnings

    for layer in model.encoder.layers:
        layer.self_attn.fuse_qkv()
    engines = torch.backends.quantized.supported_engines
    previous = torch.backends.quantized.engine
    engine = "onednn" if "onednn" in engines else previous
    try:
        torch.backends.quantized.engine = engine
        with warnings.catch_warnings():  # torch.ao's eager API is deprecated in favour of torchao
            warnings.simplefilter("ignore")
            qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
            return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear: qconfig}, dtype=torch.qint8)
    finally:
        torch.backends.quantized.engine = previous


class Encoder:
    """A ready-to-run ECG-FM encoder with its identity (``model_id``, ``checkpoint_sha256``)."""

    def __init__(self, model: ECGFM, *, model_id: str, checkpoint_sha256: str, label_names=(),
                 device: str | torch.device = "cpu", dtype: str = "float32", source: str = "",
                 fast: str | None = None):
        if dtype not in DTYPES:
            raise AtlasError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.device = resolve_device(device)
        if dtype != "float32" and self.device.type != "cuda":
            raise AtlasError(f"{dtype} inference is GPU-only (CPU reduced precision is slower and "
                             "less accurate); use float32 on the CPU")
        self.dtype = dtype
        self.model = model.to(self.device).prepare_for_inference()
        # CPU: the positional conv through the FFT (~5 % faster end to end at fp32, within 1e-6 of
        # the direct convolution; the parity tests run this path). GPUs keep cuDNN's direct conv.
        self.model.conv_pos.use_fft = self.device.type == "cpu"
        self.fast = fast
        self._run = self._fast_runner(fast)
        self.model_id = model_id
        self.checkpoint_sha256 = checkpoint_sha256
        self.label_names = tuple(label_names)
        self.source = source
        self.contract = InputContract()

    def _fast_runner(self, fast: str | None):
        """The callable that runs the network: the module itself, or its fast CPU variant."""
        if fast is None:
            return self.model
        if fast not in FAST_MODES:
            raise AtlasError(f"fast mode must be one of {', '.join(FAST_MODES)}, got {fast!r}")
        if self.device.type != "cpu" or self.dtype != "float32":
            raise AtlasError("fast modes are for float32 on the CPU (on a GPU use --dtype bfloat16)")
        if fast == "int8":
            self.model = _quantize_int8(self.model)
            return self.model
        return torch.compile(self.model, dynamic=False)

    # -- identity -------------------------------------------------------------------------------
    @property
    def config(self) -> ECGFMConfig:
        return self.model.cfg

    @property
    def dim(self) -> int:
        return self.model.cfg.embed_dim

    @property
    def can_classify(self) -> bool:
        return self.model.proj is not None

    def describe(self) -> dict:
        cfg = self.config
        return {
            "model_id": self.model_id, "checkpoint_sha256": self.checkpoint_sha256, "dim": self.dim, "fast": self.fast,
            "layers": cfg.encoder_layers, "heads": cfg.heads, "device": str(self.device), "dtype": self.dtype,
            "labels": list(self.label_names), "preprocessing_version": self.contract.preprocessing_version,
            "parameters": sum(p.numel() for p in self.model.parameters()),
        }

    # -- inference ------------------------------------------------------------------------------
    def _prepare(self, x) -> tuple[torch.Tensor, bool]:
        as_numpy = not isinstance(x, torch.Tensor)
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) if as_numpy else x
        if t.ndim == 2:
            t = t.unsqueeze(0)
        if t.ndim != 3 or t.shape[1] != self.config.in_d:
            raise AtlasError(f"encoder input must be (batch, {self.config.in_d}, samples), got {tuple(t.shape)}")
        if t.shape[2] < 2 * sum(k for _, k, _ in self.config.conv_layers):
            raise AtlasError(f"encoder input is too short ({t.shape[2]} samples)")
        return t.to(self.device, torch.float32, non_blocking=True), as_numpy

    def _autocast(self):
        if self.dtype == "float32":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=DTYPES[self.dtype])

    @staticmethod
    def _out(t: torch.Tensor, as_numpy: bool):
        return t.float().cpu().numpy() if as_numpy else t

    def forward(self, x, *, need_weights: bool = False) -> dict[str, torch.Tensor]:
        t, _ = self._prepare(x)
        with torch.inference_mode(), self._autocast():
            return self._run(t, need_weights=need_weights)

    def encode(self, x):
        """(B, 12, N) → (B, T, D) final-layer output (T = 156 for N = 2500)."""
        t, as_numpy = self._prepare(x)
        with torch.inference_mode(), self._autocast():
            return self._out(self._run(t)["x"], as_numpy)

    def embed(self, x):
        """(B, 12, N) → (B, D): ECG-FM pooling (sum / non-zero count over time), float32."""
        t, as_numpy = self._prepare(x)
        with torch.inference_mode(), self._autocast():
            return self._out(pool(self._run(t)["x"].float()), as_numpy)

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
        with torch.inference_mode(), self._autocast():
            logits = self.model.proj(pool(self._run(t)["x"].float()))
            return self._out(torch.sigmoid(logits), as_numpy)


def load_encoder(checkpoint: str | os.PathLike, device: str = "cpu", dtype: str = "float32", *,
                 revision: str | None = None, expected_sha256: str | None = None,
                 fast: str | None = None) -> Encoder:
    """Load an ECG-FM checkpoint (local path or ``hf:OWNER/REPO/FILE``) as an :class:`Encoder`."""
    loaded = load_checkpoint(checkpoint, revision=revision, expected_sha256=expected_sha256)
    cfg = loaded.model.cfg
    flavour = "finetuned" if loaded.flavour == FINETUNED else "pretrained"
    model_id = f"ecg-fm-{flavour}-{cfg.encoder_layers}x{cfg.embed_dim}"
    return Encoder(loaded.model, model_id=model_id, checkpoint_sha256=loaded.sha256,
                   label_names=loaded.label_names, device=device, dtype=dtype, source=loaded.name, fast=fast)


def random_encoder(preset: str = "base", *, seed: int = 0, device: str = "cpu", dtype: str = "float32",
                   fast: str | None = None) -> Encoder:
    """An ECG-FM-architecture encoder with random weights: the baseline every probe is compared to."""
    if preset not in PRESETS:
        raise AtlasError(f"unknown preset {preset!r}; choose one of {', '.join(PRESETS)}")
    model = init_weights(ECGFM(PRESETS[preset]), seed=seed)
    return Encoder(model, model_id=f"random-init-{preset}-seed{seed}", checkpoint_sha256="none",
                   device=device, dtype=dtype, source=f"random:{preset}", fast=fast)


def encoder_from_spec(spec: str, device: str = "auto", dtype: str = "float32", *,
                      revision: str | None = None, expected_sha256: str | None = None,
                      fast: str | None = None) -> Encoder:
    """``bundled`` (the packaged open encoder), ``random:PRESET[:SEED]`` (untrained), a path or ``hf:`` name."""
    from .weights import BUNDLED_NAME, BUNDLED_SHA256, bundled_path, is_bundled

    if is_bundled(spec):
        path = bundled_path()
        if not path.is_file():
            raise CheckpointError(f"the bundled encoder file is missing from this installation ({path}); "
                                  f"reinstall ecg-atlas or pass --checkpoint")
        encoder = load_encoder(path, device=device, dtype=dtype, expected_sha256=BUNDLED_SHA256, fast=fast)
        encoder.model_id = BUNDLED_NAME
        encoder.source = BUNDLED_NAME
        return encoder
    if spec.startswith("random:"):
        _, preset, *seed = spec.split(":")
        return random_encoder(preset, seed=int(seed[0]) if seed else 0, device=device, dtype=dtype, fast=fast)
    return load_encoder(spec, device=device, dtype=dtype, revision=revision, expected_sha256=expected_sha256,
                        fast=fast)
