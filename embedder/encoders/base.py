"""What every encoder offers, and the inference code they share.

``BaseEncoder`` is the interface of every encoder (ECG-FM in ``ecgfm``, HuBERT-ECG in
``hubert_ecg``, ECGFounder in ``ecgfounder``): ``contract`` (an ``EncoderContract``), ``model_id``,
``checkpoint_sha256``, ``dim``, ``preprocess(rec)`` / ``prepare(rec)`` (the encoder's own pipeline),
``encode`` (last-layer outputs), ``embed`` (pooled vectors, as the reference pools them),
``describe()``, ``notice`` / ``licence_notice`` and ``random_twin(seed)``; ``classify`` when a
classifier head is present (``head``: ECG-FM's fine-tuned ``proj``, a HuBERT-ECG fine-tuned file's
classifier, ECGFounder's ``dense``, or an ECG Atlas fine-tuned model.pt's head, ``finetuned`` then
holding its metadata), and ``trainable()``: a fresh float32 copy of the weights for fine-tuning
(``embedder/finetune_net.py``), rebuilt from the weights' source, never from the inference module.
Every method takes
(B, 12, N) model-ready windows as a NumPy array or a torch tensor and answers in kind: NumPy in →
NumPy out (float32), tensor in → tensor on the encoder's device.

``EncoderKind`` is how an encoder family tells the resolver (``embedder/resolver.py``) which files
and ``random:`` presets are its own: each encoder module ends with one ``KIND``, and
``resolver.KINDS`` lists them. This module imports no encoder.
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ecg_atlas.devices import parse_device, require_visible
from ecg_atlas.errors import AtlasError, CheckpointError, DeviceError

from ..checkpoint import ResolvedCheckpoint, load_raw, resolve_checkpoint
from ..contract import EncoderContract

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: torch.compile on a GPU runs at these batch sizes only (a batch is padded up to the next one):
#: each compiles once, at warm-up, instead of once per batch size the queue happens to form.
COMPILED_GPU_BATCHES = (64, 128, 256, 512)
UNTRAINED_NOTICE = ("UNTRAINED random-init encoder: its vectors carry no learned ECG knowledge "
                    "(a baseline, not a model)")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` (a GPU when torch sees one), ``cpu``, ``cuda`` or ``cuda:N``, read by the project's
    one device parser (``ecg_atlas.devices``) and checked against the GPUs torch sees."""
    chosen = parse_device(device)
    if chosen.type == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if chosen.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {str(chosen)!r} was requested but torch sees no CUDA GPU; "
                              "use --device cpu or auto")
        require_visible(chosen, torch.cuda.device_count())
    return torch.device(chosen.type) if chosen.index is None else torch.device(chosen.type, chosen.index)


def resolve_dtype(dtype: str, device: torch.device) -> str:
    """``auto``: bfloat16 on a GPU (fp32 matmuls cap ECG-FM's size an order of magnitude lower
    there; bf16 embeddings stay within cosine 0.9999 of fp32), float32 on a CPU. bfloat16 runs on
    a CPU too, through the same autocast path (fast only on CPUs with AMX); float16 is GPU-only."""
    if dtype == "auto":
        return "bfloat16" if device.type == "cuda" else "float32"
    if dtype not in DTYPES:
        raise AtlasError(f"dtype must be auto or one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "float16" and device.type != "cuda":
        raise AtlasError("float16 inference is GPU-only; on the CPU use float32 or bfloat16")
    return dtype


def quantize_linear_int8(model: torch.nn.Module) -> torch.nn.Module:
    """Dynamic int8 on every Linear layer, per-channel weights, packed for oneDNN when available."""
    engines = torch.backends.quantized.supported_engines
    previous = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = "onednn" if "onednn" in engines else previous
        with warnings.catch_warnings():  # torch.ao's eager API is deprecated in favour of torchao
            warnings.simplefilter("ignore")
            qconfig = torch.ao.quantization.per_channel_dynamic_qconfig
            return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear: qconfig}, dtype=torch.qint8)
    finally:
        torch.backends.quantized.engine = previous


class BaseEncoder:
    """What every encoder offers; a subclass gives the network's last layer (``_tokens``), its
    pooling (``_pool``), its preprocessing (``prepare``) and its random twin."""

    #: the ``fast`` modes this encoder supports (CPU, float32)
    fast_modes: tuple[str, ...] = ("compile",)

    def __init__(self, network: torch.nn.Module, *, contract: EncoderContract, model_id: str,
                 checkpoint_sha256: str, device: str | torch.device = "cpu", dtype: str = "auto",
                 source: str = "", fast: str | None = None, notice: str = "",
                 rebuild: Callable[[], torch.nn.Module] | None = None):
        self.device = resolve_device(device)
        dtype = resolve_dtype(dtype, self.device)
        if fast is not None:
            if fast not in self.fast_modes:
                choices = f"one of {', '.join(self.fast_modes)}" if self.fast_modes else "left off (it has none)"
                raise AtlasError(f"fast mode for {contract.name} must be {choices}, got {fast!r}")
            if fast != "compile" and (self.device.type != "cpu" or dtype != "float32"):
                raise AtlasError(f"fast mode {fast} is for float32 on the CPU (on a GPU use --dtype bfloat16, "
                                 "and --fast compile for the compiled path)")
        self.dtype = dtype
        self.model = self._ready(network.to(self.device))
        if dtype != "float32":
            self._cast_weights(DTYPES[dtype])
        self.contract = contract
        self.model_id = model_id
        self.checkpoint_sha256 = checkpoint_sha256
        self.source = source
        self.label_names: tuple[str, ...] = ()
        self.extra_notice = notice
        self.fast = fast
        #: "sigmoid" (binary / multi-label heads) or "softmax" (a multi-class fine-tuned head)
        self.head_activation = "sigmoid"
        #: an ECG Atlas fine-tuned model.pt's metadata (name, base, task, labels, data_digest, recipe,
        #: metrics); None for every other encoder
        self.finetuned: dict | None = None
        #: () → a fresh float32 CPU network with the weights as published (``trainable``)
        self._rebuild = rebuild
        self._run = self._fast_runner(fast)

    def _ready(self, network: torch.nn.Module) -> torch.nn.Module:
        """The network on its device, ready for inference (before any fast mode is applied)."""
        return network.eval().requires_grad_(False)

    def _float32_modules(self) -> set[torch.nn.Module]:
        """Modules whose weights stay float32 in reduced precision (besides the norms)."""
        return set()

    def _cast_weights(self, dtype: torch.dtype) -> None:
        """Reduced precision: cast the linear and convolution weights once, here, so autocast finds
        them in its dtype and casts none per forward (its cache keeps only weights that require
        grad: otherwise every weight was cast again on every batch). Norm parameters stay float32:
        autocast runs layer and group norms in float32, as the reference computes them."""
        keep = self._float32_modules()
        for module in self.model.modules():
            if isinstance(module, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d)) and module not in keep:
                module.to(dtype)

    def _fast_runner(self, fast: str | None):
        """The callable that runs the network: the module itself, or its fast variant."""
        if fast == "int8":
            self.model = quantize_linear_int8(self.model)
        elif fast == "compile":
            compiled = torch.compile(self.model, dynamic=False)
            return _Bucketed(compiled, COMPILED_GPU_BATCHES) if self.device.type == "cuda" else compiled
        return self.model

    @property
    def compiled_batches(self) -> tuple[int, ...]:
        """The batch sizes the compiled GPU path runs at (warm-up compiles each), else ()."""
        return self._run.sizes if isinstance(self._run, _Bucketed) else ()

    # -- identity -------------------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.contract.dim

    @property
    def licence_notice(self) -> str:
        """'' or the weight-licence warning to announce at start-up, in Info and in embed --json."""
        return self.contract.licence_notice

    @property
    def notice(self) -> str:
        """Everything a user must be told about this encoder (untrained or bundled, and its licence)."""
        return " | ".join(part for part in (self.extra_notice, self.licence_notice) if part)

    @property
    def head(self) -> torch.nn.Linear | None:
        """The classifier head on the pooled vector (float32), or None."""
        return None

    @property
    def has_classifier_head(self) -> bool:
        """``classify`` works: a head is present."""
        return self.head is not None

    @property
    def can_classify(self) -> bool:
        """The service's built-in head probe (``head`` / ``ecgfm-head``) serves this encoder: an ECG-FM
        fine-tuned checkpoint's own head, or the head of an ECG Atlas fine-tuned model.pt."""
        return self.finetuned is not None and self.head is not None

    def describe(self) -> dict:
        return {
            "model_id": self.model_id, "checkpoint_sha256": self.checkpoint_sha256, "dim": self.dim,
            "fast": self.fast, "device": str(self.device), "dtype": self.dtype, "labels": list(self.label_names),
            "preprocessing_version": self.contract.preprocessing_version,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "contract": self.contract.to_dict(), "notice": self.notice, "finetuned": self.finetuned,
            # float32 on a GPU: IEEE matmuls, TF32 cuDNN convolutions (torch's defaults, left as they are)
            "tf32": ({"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn_conv": torch.backends.cudnn.allow_tf32}
                     if self.device.type == "cuda" else None),
        }

    # -- preprocessing --------------------------------------------------------------------------
    @property
    def preprocessing(self):
        """This encoder's own pipeline as a module-level function ``(rec, **kwargs) -> Prepared``.
        It holds no network and pickles by name, so the service's preprocessing processes run it
        without loading the model (or torch)."""
        raise NotImplementedError

    def prepare(self, rec, **kwargs):
        """This encoder's own pipeline on a ``Recording``: ``Prepared(segments, report)``."""
        return self.preprocessing(rec, **kwargs)

    def preprocess(self, rec, **kwargs) -> np.ndarray:
        """Model-ready windows (n, 12, samples) float32 for a ``Recording``, per ``contract``."""
        return self.prepare(rec, **kwargs).segments

    # -- inference ------------------------------------------------------------------------------
    def _min_samples(self) -> int:
        return 1

    def _prepare(self, x) -> tuple[torch.Tensor, bool]:
        as_numpy = not isinstance(x, torch.Tensor)
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)) if as_numpy else x
        if t.ndim == 2:
            t = t.unsqueeze(0)
        leads = len(self.contract.leads)
        if t.ndim != 3 or t.shape[1] != leads:
            raise AtlasError(f"encoder input must be (batch, {leads}, samples), got {tuple(t.shape)}")
        if t.shape[2] < self._min_samples():
            raise AtlasError(f"encoder input is too short ({t.shape[2]} samples)")
        return t.to(self.device, torch.float32, non_blocking=True), as_numpy

    def _autocast(self):
        if self.dtype == "float32":
            return nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=DTYPES[self.dtype])

    @staticmethod
    def _out(t: torch.Tensor, as_numpy: bool):
        """What callers get: float32 always (NumPy, or a tensor on the encoder's device)."""
        return t.float().cpu().numpy() if as_numpy else t.float()

    def _tokens(self, t: torch.Tensor) -> torch.Tensor:
        """(B, 12, N) on the device → (B, T, D) last-layer outputs."""
        raise NotImplementedError

    def _pool(self, tokens: torch.Tensor) -> torch.Tensor:
        return tokens.float().mean(dim=1)

    def encode(self, x):
        """(B, 12, N) → (B, T, D) last-layer outputs."""
        t, as_numpy = self._prepare(x)
        with torch.inference_mode(), self._autocast():
            return self._out(self._tokens(t), as_numpy)

    def embed(self, x):
        """(B, 12, N) → (B, D) float32: the last layer pooled as the reference pools it."""
        t, as_numpy = self._prepare(x)
        with torch.inference_mode(), self._autocast():
            return self._out(self._pool(self._tokens(t)), as_numpy)

    def classify(self, x):
        """(B, 12, N) → (B, n_outputs) probabilities from the head on the pooled vector: sigmoid, or
        softmax for a multi-class fine-tuned head. The head runs in float32 (bf16 logits were off
        by up to 0.044 in probability)."""
        head = self.head
        if head is None:
            raise AtlasError(f"{self.model_id} has no classifier head: classify() needs a fine-tuned file "
                             "(an ECG-FM or HuBERT-ECG fine-tuned checkpoint, or a model.pt of ecg-atlas finetune)")
        t, as_numpy = self._prepare(x)
        with torch.inference_mode():
            with self._autocast():
                pooled = self._pool(self._tokens(t))
            logits = head(pooled.float())
            probs = torch.softmax(logits, dim=-1) if self.head_activation == "softmax" else torch.sigmoid(logits)
            return self._out(probs, as_numpy)

    def random_twin(self, seed: int = 0) -> "BaseEncoder":
        """An encoder of the same architecture and contract with random weights (probe baselines)."""
        raise NotImplementedError

    # -- fine-tuning ----------------------------------------------------------------------------
    def trainable(self, *, recipe: str = "default"):
        """A NEW ``TrainableNetwork`` (``embedder/finetune_net.py``): this encoder's weights as
        published, float32 on the CPU, ``train()``-able, with the family's fine-tuning recipe. Any
        existing classifier head is left out (the trainer brings its own)."""
        if recipe != "default":
            raise AtlasError(f"unknown fine-tuning recipe {recipe!r}; the one recipe is 'default' (the family's "
                             "published fine-tuning settings)")
        if self._rebuild is None:
            raise AtlasError(f"{self.model_id} cannot be fine-tuned: where its weights come from is not known")
        with torch.device("cpu"):
            return self._trainable(self._rebuild())

    def _trainable(self, network: torch.nn.Module):
        """The family's ``TrainableNetwork`` around a fresh network from ``_rebuild``."""
        raise NotImplementedError(f"{type(self).__name__} cannot be fine-tuned")


def file_rebuild(where: ResolvedCheckpoint | Callable[[], ResolvedCheckpoint],
                 network: Callable[[ResolvedCheckpoint, Any], torch.nn.Module],
                 unwrap: Callable[[Any], Any] = lambda raw: raw) -> Callable[[], torch.nn.Module]:
    """``rebuild`` for an encoder read from a file (``where``: the resolved file, or how to find it
    again): read the file again, its sha256 checked against the one loaded (a file replaced since
    is refused), and build a fresh network from it."""
    def rebuild() -> torch.nn.Module:
        resolved = where if isinstance(where, ResolvedCheckpoint) else where()
        again = resolve_checkpoint(resolved.path, expected_sha256=resolved.sha256)
        again = ResolvedCheckpoint(path=again.path, name=resolved.name, sha256=again.sha256)
        return network(again, unwrap(load_raw(again)))

    return rebuild


def copy_weights(source: torch.nn.Module, target: torch.nn.Module, *, skip: tuple[str, ...] = ()) -> torch.nn.Module:
    """``target`` (fresh, float32, on the CPU) holding ``source``'s weights, except keys starting
    with ``skip``; every other key of either must match in name and shape."""
    state = {k: v for k, v in source.state_dict().items() if not k.startswith(skip)}
    own = {k for k in target.state_dict() if not k.startswith(skip)}
    if set(state) != own:
        raise CheckpointError(f"weights do not fit the network: extra {sorted(set(state) - own)[:4]}, "
                              f"missing {sorted(own - set(state))[:4]}")
    target.load_state_dict(state, strict=not skip)
    return target.float()


def untrained_contract(contract: EncoderContract) -> EncoderContract:
    return dataclasses.replace(contract, name=f"{contract.name} architecture, random init",
                               weight_licence="none (random weights)", commercial_use=True, source="")


class _Bucketed:
    """A compiled network run at fixed batch sizes: the batch is padded with zeros up to the next
    size and the outputs cut back (batches past the largest size run as they are)."""

    def __init__(self, run, sizes: tuple[int, ...]):
        self.run, self.sizes = run, sizes

    def __call__(self, t: torch.Tensor, **kwargs) -> dict[str, torch.Tensor]:
        n = len(t)
        size = next((s for s in self.sizes if s >= n), n)
        if size > n:
            t = torch.cat([t, t.new_zeros((size - n, *t.shape[1:]))])
        return {name: value[:n] for name, value in self.run(t, **kwargs).items()}


@dataclasses.dataclass(frozen=True)
class EncoderKind:
    """One encoder family as the resolver sees it (``resolver.KINDS`` holds one per encoder).

    ``file_layout`` / ``folder_layout`` say in a user's words what a file or folder of this family
    holds; the resolver lists them when nothing claims a file or folder.
    """

    name: str
    #: the ``random:PRESET`` names this family builds
    presets: tuple[str, ...]
    #: ``(preset, *, seed, device, dtype, fast)`` → an untrained encoder of that shape
    random: Callable[..., BaseEncoder]
    #: is this checkpoint file's loaded object (``checkpoint.load_raw``) one of this family's?
    claims: Callable[[Any], bool]
    #: ``(resolved, raw, *, device, dtype, fast)`` → the encoder the file holds
    from_file: Callable[..., BaseEncoder]
    file_layout: str
    #: ``(resolved, raw)`` → a fresh float32 network from a file's loaded object (fine-tuning: the
    #: fine-tuned model.pt stores the network in this family's own layout)
    network: Callable[..., torch.nn.Module] | None = None
    #: families published as hub folders (config + weights): does this folder hold one, and
    #: ``(folder, *, name, expected_sha256, device, dtype, fast)`` → its encoder
    claims_folder: Callable[[Path], bool] | None = None
    from_folder: Callable[..., BaseEncoder] | None = None
    folder_layout: str = ""
