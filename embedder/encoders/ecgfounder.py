"""ECGFounder as an encoder: its contract, ``ECGFounderEncoder`` over the Net1D network of
``embedder/ecgfounder_model.py``, its loaders and ``KIND``, this family's entry in ``resolver.KINDS``;
fine-tuning: ``RECIPE`` (the authors' MIMIC_finetune_template.py) and ``ECGFounderTrainable``, whose
``raw_layout`` is the reference's own ``{"state_dict": ...}`` file with the new head as ``dense``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ecg_atlas.errors import CheckpointError

from .. import ecgfounder_preprocessing as prep
from ..checkpoint import ResolvedCheckpoint
from ..contract import EncoderContract
from ..ecgfounder_model import RELEASED_12_LEAD, Net1D, Net1DConfig, SameConv1d, load_net1d
from ..finetune_net import ADAM, PLATEAU, TrainableNetwork, cpu_state, head_tensors
from ..recording import STANDARD_LEADS
from .base import UNTRAINED_NOTICE, BaseEncoder, EncoderKind, copy_weights, file_rebuild, untrained_contract

CITATION = ("Li J. et al., An electrocardiogram foundation model built on over 10 million recordings with "
            "external evaluation across multiple domains, NEJM AI 2025 (arXiv:2410.04133)")

#: ECGFounder's published fine-tuning recipe: github.com/PKUDigitalHealth/ECGFounder
#: MIMIC_finetune_template.py (lr 5e-5, weight_decay 1e-5, optim.Adam over model.parameters(): the whole
#: network trains; BCEWithLogitsLoss without weights; ReduceLROnPlateau(patience=10, factor=0.1,
#: mode='max') stepped with the validation AUROC at each evaluation; Epochs 30; DataLoader batch 256)
#: and finetune_model.py (ft_ECGFounder: Net1D with use_bn=False, use_do=False — no dropout — and
#: ``dense`` replaced by a new Linear(1024, n_classes)).
RECIPE = {
    "family": "ECGFounder",
    "source": ("github.com/PKUDigitalHealth/ECGFounder MIMIC_finetune_template.py (optimizer, lr, weight decay, "
               "schedule, epochs, batch) and finetune_model.py (ft_ECGFounder: no dropout, new dense head)"),
    "pooled_dropout": 0.0, "frozen": [], "trainable": "the whole network (optim.Adam over model.parameters())",
    "masking": "none", "optimizer": ADAM, "betas": (0.9, 0.999), "eps": 1e-8, "lr": 5e-5, "weight_decay": 1e-5,
    "schedule": PLATEAU, "plateau_factor": 0.1, "plateau_patience": 10, "epochs": 30, "batch_size": 256,
    "loss": ("BCE with logits (the published template weights no class; ecg-atlas finetune adds pos_weight for "
             "class imbalance)"),
}


def ecgfounder_contract(cfg: Net1DConfig) -> EncoderContract:
    return EncoderContract(
        name="ECGFounder",
        architecture=(f"Net1D 1-D CNN (plain PyTorch): {len(cfg.filter_list)} stages "
                      f"{'/'.join(map(str, cfg.m_blocks_list))} blocks, widths {'/'.join(map(str, cfg.filter_list))}, "
                      f"kernel {cfg.kernel_size}, squeeze-excitation, no BatchNorm"),
        leads=STANDARD_LEADS, fs=prep.FS, segment_samples=prep.WINDOW_SAMPLES,
        input_shape=(len(STANDARD_LEADS), prep.WINDOW_SAMPLES),
        windowing="non-overlapping 10-s windows from the start, remainder dropped, records of 5-10 s zero-padded "
                  "to 10 s (not in the reference code: our decision, following the paper); record vector = mean",
        filtering="linear resampling to 500 Hz (endpoint-aligned), 50-Hz notch (Q 30) and 4th-order Butterworth "
                  "0.67-40 Hz band-pass forwards-backwards, minus a 0.4-s median-filter baseline",
        normalisation="one z-score over all 12 leads of each 10-s window ((x-mean)/(std+1e-8))",
        preprocessing_version=prep.PREPROCESSING_VERSION, dim=cfg.dim,
        pooling="time average of the last stage (Net1D's deep_features)",
        weight_licence="not stated (code MIT; the hub card of PKUDigitalHealth/ECGFounder states no weight licence)",
        citation=CITATION, commercial_use=None, source="hf:PKUDigitalHealth/ECGFounder/12_lead_ECGFounder.pth",
    )


class ECGFounderEncoder(BaseEncoder):
    """ECGFounder as an encoder: (B, 12, 5000) windows → (B, C, T) last stage → (B, C)."""

    fast_modes = ()  # its FLOPs are grouped convolutions: no int8 path; compile is not measured

    def __init__(self, model: Net1D, *, model_id: str, checkpoint_sha256: str, contract=None, **kwargs):
        super().__init__(model, contract=contract or ecgfounder_contract(model.cfg), model_id=model_id,
                         checkpoint_sha256=checkpoint_sha256, **kwargs)
        self.label_names = tuple(f"label_{i}" for i in range(model.cfg.n_classes))

    @property
    def config(self) -> Net1DConfig:
        return self.model.cfg

    @property
    def head(self) -> nn.Linear:
        """``dense``: the released model's 150 labels (tasks.txt order), or a fine-tuned model.pt's
        head, for ``classify`` (the service serves it only from an ECG Atlas model.pt: ``can_classify``)."""
        return self.model.dense

    def _float32_modules(self) -> set[nn.Module]:
        return {self.model.dense}  # the head runs in float32 on the float32 pooled vector

    @property
    def preprocessing(self):
        return prep.prepare

    def _tokens(self, t: torch.Tensor) -> torch.Tensor:
        return self.model.features(t)["x"].transpose(1, 2)  # (B, T, C), time second like the others

    def random_twin(self, seed: int = 0) -> "ECGFounderEncoder":
        return random_ecgfounder(self.config, seed=seed, device=self.device,
                                 contract=untrained_contract(self.contract))

    def _trainable(self, network: Net1D) -> "ECGFounderTrainable":
        return trainable_ecgfounder(network)


class ECGFounderTrainable(TrainableNetwork):
    """Net1D, trainable as its authors fine-tune it: every weight, no dropout; the released ``dense``
    is left out (the trainer's head replaces it, as ft_ECGFounder does)."""

    family = "ECGFounder"

    def __init__(self, model: Net1D, recipe: dict = RECIPE):
        model.dense = None  # unused by the pooled forward; the new head is the trainer's
        super().__init__(model, dim=model.cfg.dim, recipe=recipe)

    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        return self.network.features(x)["x"].float().mean(dim=-1)  # the time average of the last stage

    def raw_layout(self, head: nn.Linear) -> dict:
        """The reference's file: ``state_dict`` with each conv under ``….conv.`` (its padding wrapper)
        and the head as ``dense`` (its n_classes = the head's outputs)."""
        weight, bias = head_tensors(head, self.dim)
        convs = {name for name, module in self.network.named_modules() if isinstance(module, SameConv1d)}
        state = {}
        for key, tensor in cpu_state(self.network).items():
            module, _, param = key.rpartition(".")
            state[f"{module}.conv.{param}" if module in convs else key] = tensor
        state["dense.weight"], state["dense.bias"] = weight, bias
        return {"state_dict": state}


def trainable_ecgfounder(network: Net1D, recipe: dict = RECIPE) -> ECGFounderTrainable:
    return ECGFounderTrainable(copy_weights(network, Net1D(network.cfg)), recipe)


def network_from_raw(resolved: ResolvedCheckpoint, raw: dict) -> Net1D:
    """A fresh float32 Net1D from an ECGFounder file's loaded object."""
    state = raw["state_dict"] if isinstance(raw, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{resolved.name}: not an ECGFounder file (no 'state_dict')")
    return load_net1d(state)[0].float()


def load_ecgfounder(raw: dict, *, sha256: str, source: str, **kwargs) -> ECGFounderEncoder:
    state = raw["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("ECGFounder file: 'state_dict' is not a state dict of tensors")
    model, _ = load_net1d(state)
    return ECGFounderEncoder(model, model_id=f"ecgfounder-{model.cfg.in_channels}lead-{model.cfg.dim}",
                             checkpoint_sha256=sha256, source=source, **kwargs)


def random_ecgfounder(cfg: Net1DConfig = RELEASED_12_LEAD, *, seed: int = 0, contract=None,
                      **kwargs) -> ECGFounderEncoder:
    def fresh() -> Net1D:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return Net1D(cfg)

    name = "released" if cfg == RELEASED_12_LEAD else f"{len(cfg.filter_list)}x{cfg.dim}"
    return ECGFounderEncoder(fresh(), model_id=f"random-init-ecgfounder-{name}-seed{seed}",
                             checkpoint_sha256="none", notice=UNTRAINED_NOTICE, source="random:ecgfounder",
                             contract=contract or untrained_contract(ecgfounder_contract(cfg)), rebuild=fresh,
                             **kwargs)


def _from_file(resolved: ResolvedCheckpoint, raw: Any, **kwargs) -> ECGFounderEncoder:
    return load_ecgfounder(raw, sha256=resolved.sha256, source=resolved.name,
                           rebuild=file_rebuild(resolved, network_from_raw), **kwargs)


KIND = EncoderKind(
    name="ECGFounder", presets=("ecgfounder",), random=lambda preset, **kwargs: random_ecgfounder(**kwargs),
    claims=lambda raw: isinstance(raw, dict) and "state_dict" in raw, from_file=_from_file,
    file_layout="an ECGFounder file is a dict with 'state_dict'", network=network_from_raw)
