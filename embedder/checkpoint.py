"""Reading fairseq-signals ECG-FM checkpoints into our network, key by key.

A checkpoint is a ``torch.save`` dict (ecgfm_spec.md §4) whose ``model`` entry is the state dict and
whose ``cfg["model"]`` describes the architecture. We build the network from that config,
cross-checked against the tensor shapes (shapes win, loudly), map every key explicitly (the only
renames: the weight-norm pair and the finetuned ``encoder.`` prefix), refuse unknown keys, and never
read the optimizer state into memory: the file is memory-mapped and only ``model`` is touched.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ecg_atlas.errors import CheckpointError

from .model import ECGFM, ECGFMConfig, parse_conv_layers
from .weights import checkpoint_choices

log = logging.getLogger(__name__)

PRETRAINED = "wav2vec2_cmsc"
FINETUNED = "ecg_transformer_classifier"
KNOWN_MODEL_NAMES = (PRETRAINED, "wav2vec2", FINETUNED)

#: Pretraining-only tensors: present in pretrained files, unused when embedding (spec §5.1).
IGNORED_PRETRAINING_KEYS = (
    "mask_emb",
    "quantizer.vars",
    "quantizer.weight_proj.weight",
    "quantizer.weight_proj.bias",
    "project_q.weight",
    "project_q.bias",
    "final_proj.weight",
    "final_proj.bias",
)

#: The weight-norm pair of the positional conv in its two spellings → our names.
POS_CONV_KEYS = {
    "conv_pos.pos_conv.0.parametrizations.weight.original0": "conv_pos.weight_g",
    "conv_pos.pos_conv.0.parametrizations.weight.original1": "conv_pos.weight_v",
    "conv_pos.pos_conv.0.weight_g": "conv_pos.weight_g",
    "conv_pos.pos_conv.0.weight_v": "conv_pos.weight_v",
    "conv_pos.pos_conv.0.bias": "conv_pos.bias",
}

#: Label order of ECG-FM's released 17-label MIMIC-IV-ECG head (spec §9).
ECGFM_MIMIC_LABELS = (
    "Poor data quality", "Sinus rhythm", "Premature ventricular contraction", "Tachycardia",
    "Ventricular tachycardia", "Supraventricular tachycardia with aberrancy", "Atrial fibrillation",
    "Atrial flutter", "Bradycardia", "Accessory pathway conduction", "Atrioventricular block",
    "1st degree atrioventricular block", "Bifascicular block", "Right bundle branch block",
    "Left bundle branch block", "Infarction", "Electronic pacemaker",
)

_LAYER_KEY = re.compile(r"^encoder\.layers\.(\d+)\.")
_CONV_KEY = re.compile(r"^feature_extractor\.conv_layers\.(\d+)\.0\.weight$")


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A checkpoint file on local disk, with the name the user gave it and its content hash."""

    path: Path
    name: str
    sha256: str


@dataclass
class LoadedCheckpoint:
    model: ECGFM
    flavour: str  # PRETRAINED or FINETUNED
    name: str
    sha256: str
    label_names: tuple[str, ...]
    ignored_keys: tuple[str, ...]


def sha256_of(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def resolve_checkpoint(spec: str | os.PathLike, *, revision: str | None = None,
                       expected_sha256: str | None = None) -> ResolvedCheckpoint:
    """Turn ``spec`` into a local file: a path, or ``hf:OWNER/REPO/FILE[@REVISION]``.

    ``hf:`` names download through huggingface_hub into its cache (``revision`` pins a commit).
    The file's sha256 is always computed; when ``expected_sha256`` is given a mismatch is refused.
    """
    text = os.fspath(spec)
    if text.startswith("hf:"):
        path = _download_from_hub(text[3:], revision)
    else:
        path = Path(text).expanduser()
        if not path.is_file():
            raise CheckpointError(f"checkpoint file not found: {path}; {checkpoint_choices()}")
    digest = sha256_of(path)
    if expected_sha256 and digest != expected_sha256.lower():
        raise CheckpointError(
            f"checkpoint {text} has sha256 {digest}, but {expected_sha256} was expected: the file "
            "is not the one configured (corrupt download or a different revision)"
        )
    return ResolvedCheckpoint(path=path, name=text, sha256=digest)


def _download_from_hub(name: str, revision: str | None) -> Path:
    if "@" in name:
        name, revision = name.split("@", 1)
    parts = name.strip("/").split("/")
    if len(parts) < 3:
        raise CheckpointError(
            f"hf: checkpoint names look like hf:OWNER/REPO/FILE.pt (e.g. "
            f"hf:wanglab/ecg-fm/mimic_iv_ecg_physionet_pretrained.pt), got hf:{name}"
        )
    repo_id, filename = "/".join(parts[:2]), "/".join(parts[2:])
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id=repo_id, filename=filename, revision=revision))
    except Exception as exc:  # offline, 404, auth: all mean "no file", each with its own class
        raise CheckpointError(
            f"could not fetch {filename} from the Hugging Face repo {repo_id}"
            f"{' at revision ' + revision if revision else ''} ({type(exc).__name__}: {exc}). "
            "If this machine is offline, download the file where there is internet "
            f"(huggingface-cli download {repo_id} {filename}) and pass its local path instead, "
            "e.g. --checkpoint /path/to/" + filename.rsplit("/", 1)[-1]
        ) from exc


class PickledConfig:
    """A pickled config object read back as its attributes only (``vars(obj)``), no code run.

    HuBERT-ECG's training files pickle their config as a ``hubert_ecg.HuBERTECGConfig`` (or a
    ``transformers.HubertConfig``) object; torch's weights-only unpickler builds this plain class
    in its place, so those files load without full unpickling and without HuBERT-ECG's code.
    """


#: Classes a checkpoint may name that are read as ``PickledConfig`` (module path → attributes only).
SAFE_CONFIG_CLASSES = (
    "hubert_ecg.HuBERTECGConfig",
    "transformers.models.hubert.configuration_hubert.HubertConfig",
)


def _torch_load(path: Path, weights_only: bool) -> Any:
    with torch.serialization.safe_globals([(PickledConfig, name) for name in SAFE_CONFIG_CLASSES]):
        try:  # mmap: the optimizer state (2/3 of a released file) is never read into memory
            return torch.load(path, map_location="cpu", weights_only=weights_only, mmap=True)
        except RuntimeError as exc:
            if "mmap" not in str(exc):  # legacy (non-zip) files cannot be mapped; others are broken
                raise
            return torch.load(path, map_location="cpu", weights_only=weights_only)


def load_raw(resolved: ResolvedCheckpoint) -> Any:
    """The file's top-level object, read with torch's weights-only unpickler (plus ``PickledConfig``).

    Full unpickling only for a file that came from the hub (``hf:``), never for a local one.
    """
    path = resolved.path
    try:
        return _torch_load(path, weights_only=True)
    except Exception as exc:
        if isinstance(exc, pickle.UnpicklingError) and resolved.name.startswith("hf:"):
            # Only a hub file whose hash was pinned by the caller may run pickle code.
            log.warning("checkpoint holds objects outside torch's weights-only allow-list; "
                        "loading it with full unpickling because it came from the hub")
            return _torch_load(path, weights_only=False)
        raise CheckpointError(_explain_load_failure(path, exc)) from exc


def read_checkpoint(resolved: ResolvedCheckpoint, raw: Any = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """Return (cfg["model"], state dict) and drop everything else in the file at once."""
    if raw is None:
        raw = load_raw(resolved)
    if not isinstance(raw, dict) or "model" not in raw:
        keys = sorted(raw)[:8] if isinstance(raw, dict) else type(raw).__name__
        raise CheckpointError(
            f"{resolved.name} is not a fairseq-signals ECG-FM checkpoint: expected a dict with "
            f"'cfg' and 'model', found {keys}. (HuBERT-ECG files hold 'model_state_dict', ECGFounder "
            f"files 'state_dict'; a HuBERT-ECG hub folder is passed as the folder)"
        )
    cfg = raw.get("cfg") or {}
    model_cfg = dict(cfg.get("model") or {}) if isinstance(cfg, dict) else {}
    state = raw["model"]
    del raw  # optimizer state, meters, iterator state: not needed, never paged in
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{resolved.name}: 'model' is not a state dict of tensors")
    return model_cfg, state


def _explain_load_failure(path: Path, exc: Exception) -> str:
    size = path.stat().st_size
    text = str(exc)
    if "central directory" in text or "zip archive" in text or "EOF" in text or "unexpected" in text.lower():
        return (f"{path.name} ({size:,} bytes) cannot be read as a torch checkpoint: the file looks "
                f"truncated or is not a .pt file ({type(exc).__name__}: {text.splitlines()[0]})")
    if "weights_only" in text or "Unsupported global" in text:
        return (f"{path.name} contains Python objects outside torch's safe weights-only set; "
                "ECG Atlas only unpickles such files when they come pinned from the hub "
                f"({text.splitlines()[0]})")
    return f"{path.name} could not be loaded as a torch checkpoint ({type(exc).__name__}: {text.splitlines()[0]})"


def detect_flavour(model_cfg: dict, state: dict[str, torch.Tensor]) -> str:
    finetuned_keys = any(k.startswith("encoder.feature_extractor.") for k in state)
    name = model_cfg.get("_name")
    if name is not None and name not in KNOWN_MODEL_NAMES:
        raise CheckpointError(
            f"checkpoint model '{name}' is not an ECG-FM network (expected one of {', '.join(KNOWN_MODEL_NAMES)})"
        )
    if finetuned_keys:
        return FINETUNED
    if "feature_extractor.conv_layers.0.0.weight" in state:
        return PRETRAINED
    raise CheckpointError(
        "checkpoint state dict has no ECG-FM feature extractor (no 'feature_extractor.conv_layers.0.0.weight' "
        "or 'encoder.feature_extractor...' key): not an ECG-FM checkpoint"
    )


def config_from_checkpoint(model_cfg: dict, state: dict[str, torch.Tensor]) -> ECGFMConfig:
    """Architecture from ``cfg["model"]``, cross-checked against (and overruled by) tensor shapes."""
    if model_cfg.get("layer_norm_first", False):
        raise CheckpointError("pre-LN checkpoints (layer_norm_first=True) are not ECG-FM and are not supported")
    if model_cfg.get("extractor_mode", "default") != "default":
        raise CheckpointError(
            f"extractor_mode '{model_cfg['extractor_mode']}' is not supported (ECG-FM uses 'default')"
        )

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointError(f"checkpoint is missing '{key}'")
        return tuple(state[key].shape)

    layers = {int(m.group(1)) for k in state if (m := _LAYER_KEY.match(k))}
    conv_idx = sorted(int(m.group(1)) for k in state if (m := _CONV_KEY.match(k)))
    if not layers or not conv_idx:
        raise CheckpointError("checkpoint has no transformer layers or no conv layers")
    if layers != set(range(len(layers))) or conv_idx != list(range(len(conv_idx))):
        raise CheckpointError("checkpoint layer indices are not contiguous (truncated or edited state dict)")
    embed_dim, conv_dim = shape("post_extract_proj.weight")
    ffn_dim = shape("encoder.layers.0.fc1.weight")[0]
    v_shape = shape("conv_pos.weight_v")
    conv_shapes = [shape(f"feature_extractor.conv_layers.{i}.0.weight") for i in conv_idx]
    try:
        cfg_conv = parse_conv_layers(model_cfg.get("conv_feature_layers", "[(256, 2, 2)] * 4"))
    except (ValueError, SyntaxError) as exc:
        raise CheckpointError(f"cfg.model.conv_feature_layers is unreadable: {exc}") from exc
    strides = [c[2] for c in cfg_conv] if len(cfg_conv) == len(conv_shapes) else [s[2] for s in conv_shapes]
    conv_layers = tuple((s[0], s[2], stride) for s, stride in zip(conv_shapes, strides))
    from_shapes = {
        "in_d": conv_shapes[0][1],
        "conv_layers": conv_layers,
        "conv_bias": "feature_extractor.conv_layers.0.0.bias" in state,
        "encoder_layers": len(layers),
        "embed_dim": embed_dim,
        "ffn_dim": ffn_dim,
        "conv_pos": v_shape[2],
        "conv_pos_groups": embed_dim // v_shape[1],
        "num_labels": shape("proj.weight")[0] if "proj.weight" in state else 0,
    }
    from_cfg = {
        "in_d": model_cfg.get("in_d"),
        "conv_layers": cfg_conv,
        "conv_bias": model_cfg.get("conv_bias"),
        "encoder_layers": model_cfg.get("encoder_layers"),
        "embed_dim": model_cfg.get("encoder_embed_dim"),
        "ffn_dim": model_cfg.get("encoder_ffn_embed_dim"),
        "conv_pos": model_cfg.get("conv_pos"),
        "conv_pos_groups": model_cfg.get("conv_pos_groups"),
        "num_labels": model_cfg.get("num_labels", from_shapes["num_labels"]),
    }
    for key, value in from_shapes.items():
        stated = from_cfg[key]
        if stated is not None and stated != value:
            log.warning("checkpoint cfg says %s=%s but its tensors have %s=%s; using the tensor shapes",
                        key, stated, key, value)
    heads = int(model_cfg.get("encoder_attention_heads") or 12)
    if embed_dim % heads:
        raise CheckpointError(f"cfg.model.encoder_attention_heads={heads} does not divide embed dim {embed_dim}")
    try:
        return ECGFMConfig(heads=heads, **from_shapes)
    except ValueError as exc:
        raise CheckpointError(f"inconsistent checkpoint architecture: {exc}") from exc


def to_our_names(state: dict[str, torch.Tensor], flavour: str) -> tuple[dict[str, torch.Tensor], tuple[str, ...]]:
    """Rename checkpoint keys to ours; return (renamed state, explicitly ignored keys)."""
    renamed: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, tensor in state.items():
        name = key
        if flavour == FINETUNED:
            if key.startswith("encoder."):
                name = key[len("encoder."):]
            elif not key.startswith("proj."):
                raise CheckpointError(f"unexpected key '{key}' in a finetuned ECG-FM checkpoint")
        if name in IGNORED_PRETRAINING_KEYS:
            ignored.append(key)
            continue
        renamed[POS_CONV_KEYS.get(name, name)] = tensor
    return renamed, tuple(ignored)


def load_state(model: ECGFM, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into ``model``: every key consumed, every parameter filled, shapes equal."""
    own = model.state_dict()
    unknown = sorted(set(state) - set(own))
    missing = sorted(set(own) - set(state))
    if unknown or missing:
        raise CheckpointError(
            "checkpoint does not match the ECG-FM architecture: "
            + (f"unknown keys {unknown[:6]}{'...' if len(unknown) > 6 else ''}; " if unknown else "")
            + (f"missing keys {missing[:6]}{'...' if len(missing) > 6 else ''}" if missing else "")
        )
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise CheckpointError(
                f"shape mismatch for '{key}': checkpoint has {tuple(tensor.shape)}, the architecture "
                f"built from its config needs {tuple(own[key].shape)}"
            )
    # assign=True: the parameters become the (memory-mapped) checkpoint tensors, no second copy.
    model.load_state_dict(state, strict=True, assign=True)


def load_checkpoint(spec: str | os.PathLike, *, revision: str | None = None,
                    expected_sha256: str | None = None, resolved: ResolvedCheckpoint | None = None,
                    raw: Any = None) -> LoadedCheckpoint:
    """Resolve, read, map and load an ECG-FM checkpoint into a fresh network (CPU, fp32, eval).

    ``resolved`` and ``raw`` let the encoder resolver pass a file it has already opened.
    """
    if resolved is None:
        resolved = resolve_checkpoint(spec, revision=revision, expected_sha256=expected_sha256)
    model_cfg, raw_state = read_checkpoint(resolved, raw)
    del raw
    flavour = detect_flavour(model_cfg, raw_state)
    state, ignored = to_our_names(raw_state, flavour)
    del raw_state
    cfg = config_from_checkpoint(model_cfg, state)
    with torch.device("meta"):
        model = ECGFM(cfg)  # no memory until the checkpoint tensors are assigned
    load_state(model, state)
    del state
    model.eval()
    labels = _label_names(cfg.num_labels)
    log.info("loaded %s checkpoint (%d layers, dim %d, %d labels), sha256 %s…",
             flavour, cfg.encoder_layers, cfg.embed_dim, cfg.num_labels, resolved.sha256[:12])
    return LoadedCheckpoint(model=model, flavour=flavour, name=resolved.name, sha256=resolved.sha256,
                            label_names=labels, ignored_keys=ignored)


def _label_names(num_labels: int) -> tuple[str, ...]:
    if num_labels == len(ECGFM_MIMIC_LABELS):
        return ECGFM_MIMIC_LABELS
    return tuple(f"label_{i}" for i in range(num_labels))
