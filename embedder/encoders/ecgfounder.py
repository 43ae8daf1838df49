"""ECGFounder as an encoder: its contract, ``ECGFounderEncoder`` over the Net1D network of
``embedder/ecgfounder_model.py``, its loaders and ``KIND``, this family's entry in ``resolver.KINDS``.
"""

from __future__ import annotations

from typing import Any

import torch

from ecg_atlas.errors import CheckpointError

from .. import ecgfounder_preprocessing as prep
from ..checkpoint import ResolvedCheckpoint
from ..contract import EncoderContract
from ..ecgfounder_model import RELEASED_12_LEAD, Net1D, Net1DConfig, load_net1d
from ..recording import STANDARD_LEADS
from .base import UNTRAINED_NOTICE, BaseEncoder, EncoderKind, untrained_contract

CITATION = ("Li J. et al., An electrocardiogram foundation model built on over 10 million recordings with "
            "external evaluation across multiple domains, NEJM AI 2025 (arXiv:2410.04133)")


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
    def has_classifier_head(self) -> bool:
        """``dense``: the released model's 150 labels, for ``classify``. (``can_classify`` stays
        False: it means ECG-FM's own head, which the service's ``ecgfm-head`` probe reads.)"""
        return True

    @property
    def preprocessing(self):
        return prep.prepare

    def _tokens(self, t: torch.Tensor) -> torch.Tensor:
        return self.model.features(t)["x"].transpose(1, 2)  # (B, T, C), time second like the others

    def classify(self, x):
        """(B, 12, N) → (B, 150) sigmoid probabilities of the released model's labels (tasks.txt order)."""
        t, as_numpy = self._prepare(x)
        with torch.inference_mode(), self._autocast():
            return self._out(torch.sigmoid(self.model.dense(self._pool(self._tokens(t)))), as_numpy)

    def random_twin(self, seed: int = 0) -> "ECGFounderEncoder":
        return random_ecgfounder(self.config, seed=seed, device=self.device,
                                 contract=untrained_contract(self.contract))


def load_ecgfounder(raw: dict, *, sha256: str, source: str, **kwargs) -> ECGFounderEncoder:
    state = raw["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError("ECGFounder file: 'state_dict' is not a state dict of tensors")
    model, _ = load_net1d(state)
    return ECGFounderEncoder(model, model_id=f"ecgfounder-{model.cfg.in_channels}lead-{model.cfg.dim}",
                             checkpoint_sha256=sha256, source=source, **kwargs)


def random_ecgfounder(cfg: Net1DConfig = RELEASED_12_LEAD, *, seed: int = 0, contract=None,
                      **kwargs) -> ECGFounderEncoder:
    torch.manual_seed(seed)
    name = "released" if cfg == RELEASED_12_LEAD else f"{len(cfg.filter_list)}x{cfg.dim}"
    return ECGFounderEncoder(Net1D(cfg), model_id=f"random-init-ecgfounder-{name}-seed{seed}",
                             checkpoint_sha256="none", notice=UNTRAINED_NOTICE, source="random:ecgfounder",
                             contract=contract or untrained_contract(ecgfounder_contract(cfg)), **kwargs)


def _from_file(resolved: ResolvedCheckpoint, raw: Any, **kwargs) -> ECGFounderEncoder:
    return load_ecgfounder(raw, sha256=resolved.sha256, source=resolved.name, **kwargs)


KIND = EncoderKind(
    name="ECGFounder", presets=("ecgfounder",), random=lambda preset, **kwargs: random_ecgfounder(**kwargs),
    claims=lambda raw: isinstance(raw, dict) and "state_dict" in raw, from_file=_from_file,
    file_layout="an ECGFounder file is a dict with 'state_dict'")
