"""HuBERT-ECG through ``transformers``: its checkpoints, read safely, as a plain ``HubertModel``
(``HubertECGEncoder``; ``KIND`` is this family's entry in ``resolver.KINDS``).

HuBERT-ECG (Coppola et al., 2024; github.com/Edoar-do/HuBERT-ECG; weights on the hub as
``Edoardo-BS/hubert-ecg-{small,base,large}``, **CC BY-NC 4.0: non-commercial**) is a standard
HuBERT encoder over one 6000-sample vector (12 leads × 5 s at 100 Hz, joined lead-major). The
authors' class adds only pretraining/classification heads: plain ``transformers.HubertModel``
computes the same last layer (bit-exactly on the parity model, under transformers 4.46 and 5.x),
so we use it (optional extra ``ecg-atlas[hubert]``).

Layouts read (the kind is detected from the contents):

* a hub folder: ``config.json`` + ``model.safetensors`` (or ``pytorch_model.bin``);
* the training files ``pretrain.py`` / ``finetune.py`` save: a dict with ``model_config`` (a
  pickled ``HuBERTECGConfig`` or ``HubertConfig`` object, read as its attributes only: never
  unpickled as code, see ``checkpoint.PickledConfig``) and ``model_state_dict`` (``hubert_ecg.``
  prefixed, plus ``classifier.*``, in fine-tuned files); either weight-norm spelling of the
  positional conv.

Keys are mapped explicitly onto ``HubertModel``'s (only renames: the ``hubert_ecg.`` prefix and
``weight_g/weight_v`` → ``parametrizations.weight.original0/1``); pretraining heads are named and
ignored; every shape is checked; the architecture comes from the config, cross-checked against
the tensors. Embedding = mean over time of the last layer (the authors' classifier input).

Fine-tuning: ``RECIPE`` (the authors' ``scripts/finetune.py`` with the PTB-XL settings of
``scripts/finetune.sh``) and ``HubertTrainable``, whose ``raw_layout`` is the training-file layout
``finetune.py`` writes (``model_config`` + ``hubert_ecg.``-prefixed state + ``classifier.*``).
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ecg_atlas.errors import CheckpointError

from .. import hubert_ecg_preprocessing as prep
from ..checkpoint import ResolvedCheckpoint, sha256_of
from ..contract import EncoderContract
from ..finetune_net import ADAMW, LINEAR_WARMUP_DECAY, TrainableNetwork, cpu_state, head_tensors
from ..recording import STANDARD_LEADS
from .base import UNTRAINED_NOTICE, BaseEncoder, EncoderKind, copy_weights, file_rebuild, untrained_contract

log = logging.getLogger(__name__)

#: Pretraining-only tensors (masked-prediction projection, cluster-label embeddings, mask vector).
IGNORED_PREFIXES = ("final_proj.", "label_embedding.", "masked_spec_embed")
#: Config fields that shape the network; everything else in a config (dropouts, masking, heads'
#: sizes, tokenizer ids) does not change the encoder's outputs in eval mode.
ARCHITECTURE_FIELDS = (
    "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "hidden_act",
    "conv_dim", "conv_kernel", "conv_stride", "conv_bias", "feat_extract_norm", "feat_extract_activation",
    "feat_proj_layer_norm", "do_stable_layer_norm", "num_conv_pos_embeddings", "num_conv_pos_embedding_groups",
    "layer_norm_eps",
)
#: Released sizes (README of shared/data/parity_encoders/hubert_ecg; the hub configs).
SIZES = {
    "small": {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8, "intermediate_size": 2048},
    "base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072},
    "large": {"hidden_size": 960, "num_hidden_layers": 16, "num_attention_heads": 12, "intermediate_size": 3840},
}
RELEASED_CONV = {"conv_dim": [512] * 5, "conv_kernel": [10, 3, 3, 2, 2], "conv_stride": [4, 2, 2, 2, 2],
                 "conv_bias": False, "feat_extract_norm": "group", "feat_proj_layer_norm": True,
                 "do_stable_layer_norm": False, "num_conv_pos_embeddings": 128,
                 "num_conv_pos_embedding_groups": 16, "layer_norm_eps": 1e-5, "hidden_act": "gelu",
                 "feat_extract_activation": "gelu"}
WEIGHT_NORM_KEYS = {
    "encoder.pos_conv_embed.conv.weight_g": "encoder.pos_conv_embed.conv.parametrizations.weight.original0",
    "encoder.pos_conv_embed.conv.weight_v": "encoder.pos_conv_embed.conv.parametrizations.weight.original1",
}
_LAYER = re.compile(r"^encoder\.layers\.(\d+)\.")
CITATION = ("Coppola E. et al., HuBERT-ECG as a self-supervised foundation model for broad and scalable "
            "cardiac applications, medRxiv 2024.11.14.24317328")

#: HuBERT-ECG's published fine-tuning recipe. github.com/Edoar-do/HuBERT-ECG scripts/finetune.py: AdamW
#: betas (0.9, 0.98), eps 1e-9, --lr 1e-5, weight decay 0.01 x --weight_decay_mult 1, linear warm-up over
#: --ramp_up_perc 0.08 of the steps then linear decay (transformers' get_linear_schedule_with_warmup),
#: BCE with pos_weight (--use_loss_weights; class-weighted cross-entropy for multi_class), the conv
#: feature extractor frozen (--unfreeze_conv_embedder off), set_transformer_blocks_trainable freezing the
#: encoder but for the last --transformer_blocks_to_unfreeze blocks; scripts/finetune.sh (PTB-XL
#: superclasses, small model): --transformer_blocks_to_unfreeze=8 (all), --model_dropout_mult=-2 (every
#: dropout module of the backbone at 0.1 + 0.05 x -2 = 0; attention dropout is a float, left at the
#: config's 0.1), --finetuning_layerdrop=0.0, batch 64, patience 8 evaluations on AUROC. The
#: classification wrapper resets mask_time_prob / mask_feature_prob to 0 (no masking) and drops out the
#: pooled vector before the classifier (0.1).
RECIPE = {
    "family": "HuBERT-ECG",
    "source": ("github.com/Edoar-do/HuBERT-ECG scripts/finetune.py (optimizer, schedule, freezing, dropout "
               "rule) with the PTB-XL settings of scripts/finetune.sh"),
    "hidden_dropout": 0.0, "activation_dropout": 0.0, "feat_proj_dropout": 0.0, "attention_dropout": 0.1,
    "layerdrop": 0.0, "pooled_dropout": 0.1,
    "frozen": ["feature_extractor: the convolutional feature encoder", "encoder.pos_conv_embed",
               "encoder.layer_norm"],
    "trainable": "feature_projection and every transformer block (--transformer_blocks_to_unfreeze = all)",
    "masking": "none (mask_time_prob and mask_feature_prob reset to 0)",
    "optimizer": ADAMW, "betas": (0.9, 0.98), "eps": 1e-9, "lr": 1e-5, "weight_decay": 0.01,
    "schedule": LINEAR_WARMUP_DECAY, "warmup_fraction": 0.08, "batch_size": 64, "patience_evaluations": 8,
    "loss": "BCE with logits, pos_weight per label (--use_loss_weights); multi-class: class-weighted cross-entropy",
}


def _transformers():
    try:
        import transformers
    except ImportError as exc:
        raise CheckpointError("HuBERT-ECG runs on the `transformers` library: pip install 'ecg-atlas[hubert]'"
                              ) from exc
    return transformers


def hubert_config(fields: dict[str, Any]):
    """A ``HubertConfig`` with the architecture in ``fields``, masking and dropout off."""
    transformers = _transformers()
    arch = {k: fields[k] for k in ARCHITECTURE_FIELDS if k in fields}
    missing = {"hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"} - set(arch)
    if missing:
        raise CheckpointError(f"HuBERT-ECG config lacks {', '.join(sorted(missing))}")
    arch["num_feat_extract_layers"] = len(arch.get("conv_dim", RELEASED_CONV["conv_dim"]))
    return transformers.HubertConfig(**arch, mask_time_prob=0.0, mask_feature_prob=0.0, layerdrop=0.0,
                                     hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                                     feat_proj_dropout=0.0, final_dropout=0.0)


def _check_config_against_shapes(config, state: dict[str, torch.Tensor]) -> None:
    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise CheckpointError(f"HuBERT-ECG checkpoint is missing '{key}'")
        return tuple(state[key].shape)

    layers = {int(m.group(1)) for k in state if (m := _LAYER.match(k))}
    convs = [shape(f"feature_extractor.conv_layers.{i}.conv.weight") for i in range(len(config.conv_dim))]
    v = shape("encoder.pos_conv_embed.conv.parametrizations.weight.original1")
    from_shapes = {
        "hidden_size": shape("feature_projection.projection.weight")[0],
        "num_hidden_layers": len(layers),
        "intermediate_size": shape("encoder.layers.0.feed_forward.intermediate_dense.weight")[0],
        "conv_dim": [c[0] for c in convs], "conv_kernel": [c[2] for c in convs],
        "num_conv_pos_embeddings": v[2], "num_conv_pos_embedding_groups": v[0] // v[1],
    }
    for key, value in from_shapes.items():
        stated = getattr(config, key)
        stated = list(stated) if isinstance(stated, (list, tuple)) else stated
        if stated != value:
            raise CheckpointError(f"HuBERT-ECG config says {key}={stated} but the tensors have {value}")
    if convs[0][1] != 1:
        raise CheckpointError(f"HuBERT-ECG's first conv takes 1 channel (the joined 12-lead vector), "
                              f"this one {convs[0][1]}")


def map_state(state: dict[str, torch.Tensor]) -> tuple[dict, dict, tuple[str, ...]]:
    """Checkpoint keys → (HubertModel state, classifier head state, ignored keys)."""
    encoder: dict[str, torch.Tensor] = {}
    head: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, tensor in state.items():
        name = key.removeprefix("hubert_ecg.")
        if key.startswith("classifier."):
            head[key.removeprefix("classifier.")] = tensor
        elif name.startswith(IGNORED_PREFIXES):
            ignored.append(key)
        else:
            encoder[WEIGHT_NORM_KEYS.get(name, name)] = tensor
    return encoder, head, tuple(ignored)


def build_model(config, state: dict[str, torch.Tensor]):
    """A ``HubertModel`` holding ``state``: every key placed, every parameter filled, shapes equal."""
    transformers = _transformers()
    _check_config_against_shapes(config, state)
    model = transformers.HubertModel(config)
    own = model.state_dict()
    unknown = sorted(set(state) - set(own))
    missing = sorted(set(own) - set(state))
    if unknown or missing:
        raise CheckpointError("checkpoint does not match HuBERT-ECG's architecture: "
                              + (f"unknown keys {unknown[:6]}; " if unknown else "")
                              + (f"missing keys {missing[:6]}" if missing else ""))
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(own[key].shape):
            raise CheckpointError(f"shape mismatch for '{key}': checkpoint {tuple(tensor.shape)}, "
                                  f"HubertModel needs {tuple(own[key].shape)}")
    model.load_state_dict(state, strict=True)
    return model.eval()


def read_folder(folder: Path) -> tuple[dict, dict[str, torch.Tensor], Path]:
    """(config fields, state dict, weights file) of a hub-layout folder."""
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{folder} is a folder without config.json: not a HuBERT-ECG hub folder")
    fields = json.loads(config_file.read_text())
    for name in ("model.safetensors", "pytorch_model.bin"):
        weights = folder / name
        if weights.is_file():
            break
    else:
        raise CheckpointError(f"{folder} has config.json but no model.safetensors or pytorch_model.bin")
    if weights.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(weights)
    else:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    return fields, state, weights


def fields_of_training_file(raw: dict) -> tuple[dict, dict[str, torch.Tensor]]:
    """(config fields, state dict) of a HuBERT-ECG ``pretrain.py``/``finetune.py`` file."""
    config = raw.get("model_config")
    fields = dict(vars(config)) if hasattr(config, "__dict__") else dict(config or {})
    state = raw["model_state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("HuBERT-ECG file: 'model_state_dict' is not a state dict of tensors")
    return fields, state


def hubert_contract(config, *, size: str | None = None) -> EncoderContract:
    return EncoderContract(
        name="HuBERT-ECG",
        architecture=(f"HuBERT transformer (transformers HubertModel){' ' + size if size else ''}: "
                      f"{config.num_hidden_layers} layers x {config.hidden_size}, {config.num_attention_heads} heads, "
                      f"conv features {len(config.conv_dim)} x {config.conv_dim[0]} over the joined 12-lead vector"),
        leads=STANDARD_LEADS, fs=prep.FS, segment_samples=prep.WINDOW_SAMPLES,
        input_shape=(len(STANDARD_LEADS), prep.MODEL_SAMPLES_PER_LEAD),
        windowing="non-overlapping 5-s windows from the start (the reference: first 5 s only), remainder "
                  "dropped, records of 2.5-5 s zero-padded to 5 s; each window's 12 leads joined lead-major and "
                  "decimated x5 as one vector -> (12, 500) = 6000 model inputs; record vector = mean",
        filtering="FIR band-pass '0.05-47 Hz' (int(0.3 fs) taps, Hamming, forwards-backwards) at the original rate, "
                  "then FFT resampling to 500 Hz",
        normalisation="per-lead min-max to [-1, 1) over the whole record (2(x-min)/(max-min+1e-8)-1)",
        preprocessing_version=prep.PREPROCESSING_VERSION, dim=config.hidden_size,
        pooling="mean over time of the last layer (the authors' classifier input; 93 steps per window)",
        weight_licence="CC BY-NC 4.0", citation=CITATION, commercial_use=False,
        source="hf:Edoardo-BS/hubert-ecg-small|base|large",
    )


class HubertECGEncoder(BaseEncoder):
    """HuBERT-ECG as an encoder: (B, 12, 500) windows → (B, 93, H) last layer → (B, H)."""

    fast_modes = ("int8", "compile")

    def __init__(self, model, *, model_id: str, checkpoint_sha256: str, head: dict | None = None,
                 contract: EncoderContract | None = None, notice: str = "", **kwargs):
        self._head = None
        super().__init__(model, contract=contract or hubert_contract(model.config), model_id=model_id,
                         checkpoint_sha256=checkpoint_sha256, notice=notice, **kwargs)
        if head:
            if set(head) != {"weight", "bias"}:
                raise CheckpointError(f"HuBERT-ECG classifier: only a linear head (weight, bias) is read, "
                                      f"this one holds {sorted(head)}")
            linear = torch.nn.Linear(head["weight"].shape[1], head["weight"].shape[0])
            linear.load_state_dict(head)
            self._head = linear.float().to(self.device).eval().requires_grad_(False)
            self.label_names = tuple(f"label_{i}" for i in range(head["weight"].shape[0]))

    def _ready(self, network):
        # Inference: fold the positional conv's weight norm (g·v/‖v‖) into a plain weight once,
        # instead of recomputing it on every forward pass as the parametrisation does.
        from torch.nn.utils import parametrize

        conv = network.encoder.pos_conv_embed.conv
        if parametrize.is_parametrized(conv, "weight"):
            parametrize.remove_parametrizations(conv, "weight", leave_parametrized=True)
        return super()._ready(network)

    @property
    def config(self):
        return self.model.config

    @property
    def head(self) -> nn.Linear | None:
        """A fine-tuned file's linear classifier, for ``classify`` (the service serves it only from
        an ECG Atlas model.pt: ``can_classify``)."""
        return self._head

    def _min_samples(self) -> int:
        # the joined vector must survive the conv stack (400 samples for the released kernels)
        receptive = 1
        for kernel, stride in zip(reversed(self.config.conv_kernel), reversed(self.config.conv_stride)):
            receptive = (receptive - 1) * stride + kernel
        return -(-receptive // len(self.contract.leads))

    @property
    def preprocessing(self):
        return prep.prepare

    def _tokens(self, t: torch.Tensor) -> torch.Tensor:
        # (B, 12, L) → the reference's (B, 12·L) lead-major vector; no attention mask (as its evaluation)
        return self._run(input_values=t.reshape(t.shape[0], -1)).last_hidden_state

    def random_twin(self, seed: int = 0) -> "HubertECGEncoder":
        return random_hubert(self.config, seed=seed, device=self.device, contract=untrained_contract(self.contract))

    def _trainable(self, network) -> "HubertTrainable":
        return trainable_hubert(network)


class HubertTrainable(TrainableNetwork):
    """HuBERT-ECG's ``HubertModel``, trainable as its authors fine-tune it (``RECIPE``)."""

    family = "HuBERT-ECG"

    def __init__(self, model, recipe: dict = RECIPE):
        model.config.layerdrop = float(recipe["layerdrop"])
        model.feature_extractor._freeze_parameters()  # transformers' own switch: no grad through the convs
        super().__init__(model, dim=model.config.hidden_size, recipe=recipe,
                         frozen=[model.feature_extractor, model.encoder.pos_conv_embed, model.encoder.layer_norm])

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 12, L) → the reference's (B, 12·L) lead-major vector → mean over time of the last layer
        return self.network(input_values=x.reshape(x.shape[0], -1)).last_hidden_state.float().mean(dim=1)

    def raw_layout(self, head: nn.Linear) -> dict:
        """The training-file layout of HuBERT-ECG's finetune.py: ``model_config`` (the architecture,
        a plain dict) and ``model_state_dict`` (``hubert_ecg.``-prefixed, the head as ``classifier``)."""
        weight, bias = head_tensors(head, self.dim)
        config = self.network.config
        fields = {k: (list(v) if isinstance(v, tuple) else v) for k, v in config.to_dict().items()
                  if k in ARCHITECTURE_FIELDS}
        state = {f"hubert_ecg.{k}": v for k, v in cpu_state(self.network).items()}
        state["classifier.weight"], state["classifier.bias"] = weight, bias
        return {"model_config": fields, "model_state_dict": state}


def trainable_hubert(network, recipe: dict = RECIPE) -> HubertTrainable:
    """A fresh ``HubertModel`` with the recipe's dropouts and no masking, holding ``network``'s weights."""
    fields = {k: v for k, v in network.config.to_dict().items() if k in ARCHITECTURE_FIELDS}
    config = hubert_config(fields)
    for key in ("hidden_dropout", "activation_dropout", "feat_proj_dropout", "attention_dropout"):
        setattr(config, key, float(recipe[key]))
    transformers = _transformers()
    return HubertTrainable(copy_weights(network, transformers.HubertModel(config)), recipe)


def network_from_raw(resolved: ResolvedCheckpoint, raw: dict):
    """A fresh float32 ``HubertModel`` from a HuBERT-ECG training file's loaded object."""
    fields, state = fields_of_training_file(raw)
    return build_model(hubert_config(fields), map_state(state)[0]).float()


def network_from_folder(folder: Path, sha256: str):
    """A fresh float32 ``HubertModel`` from a hub folder, its weights file's sha256 checked again."""
    fields, state, weights = read_folder(folder)
    if sha256_of(weights) != sha256:
        raise CheckpointError(f"{weights} changed since it was loaded (sha256 differs): load the encoder again")
    return build_model(hubert_config(fields), map_state(state)[0]).float()


def load_hubert(fields: dict, state: dict[str, torch.Tensor], *, sha256: str, source: str, flavour: str,
                **kwargs) -> HubertECGEncoder:
    """The encoder a config + state dict describe (``rebuild`` in kwargs: how to build it again)."""
    config = hubert_config(fields)
    encoder_state, head, ignored = map_state(state)
    model = build_model(config, encoder_state)
    log.info("loaded HuBERT-ECG %s (%d layers x %d); ignored %s", flavour, config.num_hidden_layers,
             config.hidden_size, ", ".join(ignored) or "nothing")
    model_id = f"hubert-ecg-{flavour}-{config.num_hidden_layers}x{config.hidden_size}"
    return HubertECGEncoder(model, model_id=model_id, checkpoint_sha256=sha256, head=head or None,
                            source=source, **kwargs)


def random_hubert(config_or_size, *, seed: int = 0, contract: EncoderContract | None = None,
                  **kwargs) -> HubertECGEncoder:
    """A HuBERT-ECG-shaped encoder with random weights (transformers' own initialisation, seeded)."""
    transformers = _transformers()
    size = config_or_size if isinstance(config_or_size, str) else None
    config = hubert_config({**RELEASED_CONV, **SIZES[size]}) if size else config_or_size

    def fresh():
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return transformers.HubertModel(config).eval()

    name = size or f"{config.num_hidden_layers}x{config.hidden_size}"
    return HubertECGEncoder(fresh(), model_id=f"random-init-hubert-ecg-{name}-seed{seed}", checkpoint_sha256="none",
                            contract=contract or untrained_contract(hubert_contract(config, size=size)),
                            notice=UNTRAINED_NOTICE, source=f"random:hubert-ecg-{name}", rebuild=fresh, **kwargs)


def load_folder(folder: Path, *, name: str, expected_sha256: str | None = None, **kwargs) -> HubertECGEncoder:
    """A hub folder's encoder; its sha256 is the weights file's (checked against ``expected_sha256``)."""
    fields, state, weights = read_folder(folder)
    digest = sha256_of(weights)
    if expected_sha256 and digest != expected_sha256.lower():
        raise CheckpointError(f"{name}: weights file {weights.name} has sha256 {digest}, but {expected_sha256} "
                              "was expected: not the configured weights (corrupt download or another revision)")
    return load_hubert(fields, state, sha256=digest, source=name, flavour="pretrained",
                       rebuild=lambda: network_from_folder(folder, digest), **kwargs)


def _from_file(resolved: ResolvedCheckpoint, raw: dict, **kwargs) -> HubertECGEncoder:
    fields, state = fields_of_training_file(raw)
    flavour = "finetuned" if any(k.startswith("hubert_ecg.") for k in state) else "pretrained"
    kwargs.setdefault("rebuild", file_rebuild(resolved, network_from_raw))
    return load_hubert(fields, state, sha256=resolved.sha256, source=resolved.name, flavour=flavour, **kwargs)


KIND = EncoderKind(
    name="HuBERT-ECG", presets=tuple(f"hubert-ecg-{size}" for size in SIZES),
    random=lambda preset, **kwargs: random_hubert(preset.removeprefix("hubert-ecg-"), **kwargs),
    claims=lambda raw: isinstance(raw, dict) and "model_state_dict" in raw, from_file=_from_file,
    file_layout="a HuBERT-ECG training file is a dict with 'model_config' and 'model_state_dict'",
    network=network_from_raw,
    claims_folder=lambda folder: (folder / "config.json").is_file(), from_folder=load_folder,
    folder_layout="a HuBERT-ECG hub folder holds config.json and model.safetensors (or pytorch_model.bin)")
