"""ECGFounder's network (Net1D) in plain PyTorch, and its checkpoint mapped onto it key by key
(the encoder around it: ``encoders/ecgfounder.py``).

ECGFounder (Li et al., "An electrocardiogram foundation model built on over 10 million recordings
with external evaluation across multiple domains", NEJM AI 2025; code MIT, github.com/PKUDigitalHealth/
ECGFounder) is a 1-D convolutional network:

* a first conv (kernel 16, stride 2, "same" padding) and Swish;
* 7 stages of pre-activation bottleneck blocks: Swish → conv 1×1 → Swish → grouped conv k=16
  (groups = channels / 16, stride 2 in each stage's first block) → Swish → conv 1×1, then a
  squeeze-excitation gate (time mean → Linear(C, C/2) → Swish → Linear → sigmoid → scale). The
  very first block of the network skips its first activation. The identity branch is max-pooled
  (kernel = stride, zero-padded "same") where the block strides, and zero channels are added
  around it where the block widens;
* global average over time of the last stage → the embedding (1,024-d in the released model) →
  ``dense`` → 150 logits (sigmoid).

Every released config has ``use_bn=False`` and ``use_do=False``: the checkpoint holds BatchNorm
weights and running statistics that the network never applies. They are named and ignored here
(``IGNORED_KEY_PARTS``), never loaded. "Same" padding follows the reference exactly:
p = max(0, (ceil(L/s) − 1)·s + k − L) zeros, p//2 on the left, the rest on the right; the pooled
identity branch pads k − 1 **zeros** (not −inf) the same way.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ecg_atlas.errors import CheckpointError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Net1DConfig:
    in_channels: int = 12
    base_filters: int = 64
    ratio: float = 1.0
    filter_list: tuple[int, ...] = (64, 160, 160, 400, 400, 1024, 1024)
    m_blocks_list: tuple[int, ...] = (2, 2, 2, 3, 3, 4, 4)
    kernel_size: int = 16
    stride: int = 2
    groups_width: int = 16
    n_classes: int = 150

    @property
    def dim(self) -> int:
        return self.filter_list[-1]


#: The released 12-lead model (PKUDigitalHealth/ECGFounder, 12_lead_ECGFounder.pth): 30.8 M parameters.
RELEASED_12_LEAD = Net1DConfig()
#: Same block structure, fewer channels and blocks: what the parity files use.
TINY = Net1DConfig(base_filters=16, filter_list=(16, 32, 32, 48, 48, 64, 64), m_blocks_list=(2, 1, 1, 2, 1, 1, 2))


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def _same_padding(length: int, kernel: int, stride: int) -> tuple[int, int]:
    total = max(0, (math.ceil(length / stride) - 1) * stride + kernel - length)
    return total // 2, total - total // 2


class SameConv1d(nn.Conv1d):
    """Conv1d with the reference's "same" zero padding (asymmetric when the total is odd)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, _same_padding(x.shape[-1], self.kernel_size[0], self.stride[0])))


class Block(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, ratio: float, kernel: int, stride: int, groups: int,
                 first_of_network: bool):
        super().__init__()
        mid = int(out_ch * ratio)
        self.in_ch, self.out_ch, self.stride = in_ch, out_ch, stride
        self.first_of_network = first_of_network
        self.conv1 = SameConv1d(in_ch, mid, 1)
        self.conv2 = SameConv1d(mid, mid, kernel, stride=stride, groups=groups)
        self.conv3 = SameConv1d(mid, out_ch, 1)
        self.se_fc1 = nn.Linear(out_ch, out_ch // 2)
        self.se_fc2 = nn.Linear(out_ch // 2, out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x if self.first_of_network else swish(x)
        out = self.conv3(swish(self.conv2(swish(self.conv1(out)))))
        gate = torch.sigmoid(self.se_fc2(swish(self.se_fc1(out.mean(-1)))))
        out = out * gate.unsqueeze(-1)
        identity = x
        if self.stride > 1:  # max-pool with zero "same" padding, kernel = stride
            identity = F.max_pool1d(F.pad(identity, _same_padding(identity.shape[-1], self.stride, 1)), self.stride)
        if self.out_ch != self.in_ch:
            before = (self.out_ch - self.in_ch) // 2
            identity = F.pad(identity, (0, 0, before, self.out_ch - self.in_ch - before))
        return out + identity


class Stage(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, cfg: Net1DConfig, index: int, n_blocks: int):
        super().__init__()
        groups = out_ch // cfg.groups_width
        self.block_list = nn.ModuleList(
            Block(in_ch if i == 0 else out_ch, out_ch, cfg.ratio, cfg.kernel_size, cfg.stride if i == 0 else 1,
                  groups, first_of_network=index == 0 and i == 0)
            for i in range(n_blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.block_list:
            x = block(x)
        return x


class Net1D(nn.Module):
    def __init__(self, cfg: Net1DConfig):
        super().__init__()
        if len(cfg.filter_list) != len(cfg.m_blocks_list):
            raise ValueError("filter_list and m_blocks_list must have one entry per stage")
        self.cfg = cfg
        self.first_conv = SameConv1d(cfg.in_channels, cfg.base_filters, cfg.kernel_size, stride=2)
        channels = [cfg.base_filters, *cfg.filter_list]
        self.stage_list = nn.ModuleList(
            Stage(channels[i], channels[i + 1], cfg, i, n) for i, n in enumerate(cfg.m_blocks_list))
        self.dense = nn.Linear(cfg.filter_list[-1], cfg.n_classes)

    def features(self, x: torch.Tensor, *, keep_stages: bool = False) -> dict[str, torch.Tensor]:
        """(B, 12, N) → {"x": last stage (B, C, T), optionally "stage_i" and "first_conv"}."""
        out: dict[str, torch.Tensor] = {}
        h = self.first_conv(x)
        if keep_stages:
            out["first_conv"] = h
        h = swish(h)
        for i, stage in enumerate(self.stage_list):
            h = stage(h)
            if keep_stages:
                out[f"stage_{i}"] = h
        out["x"] = h
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 12, N) → (B, C) deep features: the time average of the last stage."""
        return self.features(x)["x"].mean(-1)


# -- checkpoint ------------------------------------------------------------------------------------

#: BatchNorm state the checkpoint stores and the released config (use_bn=False) never applies.
IGNORED_KEY_PARTS = ("first_bn.", ".bn1.", ".bn2.", ".bn3.")
_CONV = re.compile(r"^(.*)\.conv\.(weight|bias)$")
_STAGE_BLOCK = re.compile(r"^stage_list\.(\d+)\.block_list\.(\d+)\.")


def our_name(key: str) -> str | None:
    """Checkpoint key → our parameter name (None: an ignored BatchNorm tensor).

    The reference wraps each Conv1d in a padding module (``….conv.weight``); ours *is* the conv.
    """
    if key.startswith("module."):  # saved from DataParallel
        key = key[len("module."):]
    if any(part in f".{key}" for part in IGNORED_KEY_PARTS):
        return None
    m = _CONV.match(key)
    return f"{m.group(1)}.{m.group(2)}" if m else key


def config_from_state(state: dict[str, torch.Tensor]) -> Net1DConfig:
    """The architecture, read from tensor shapes alone (the checkpoint stores no config)."""
    def shape(key: str) -> tuple[int, ...]:
        for k in (key, f"module.{key}"):
            if k in state:
                return tuple(state[k].shape)
        raise CheckpointError(f"not an ECGFounder (Net1D) checkpoint: '{key}' is missing")

    base, in_channels, kernel = shape("first_conv.conv.weight")
    blocks: dict[int, int] = {}
    for key in state:
        if m := _STAGE_BLOCK.match(key.removeprefix("module.")):
            stage, block = int(m.group(1)), int(m.group(2))
            blocks[stage] = max(blocks.get(stage, 0), block + 1)
    if not blocks or sorted(blocks) != list(range(len(blocks))):
        raise CheckpointError("ECGFounder checkpoint: stage indices are missing or not contiguous")
    filters = tuple(shape(f"stage_list.{i}.block_list.0.conv3.conv.weight")[0] for i in range(len(blocks)))
    mid, per_group, _ = shape("stage_list.0.block_list.0.conv2.conv.weight")
    groups_width = per_group  # groups = channels / groups_width, and each group holds groups_width channels
    n_classes = shape("dense.weight")[0]
    return Net1DConfig(in_channels=in_channels, base_filters=base, ratio=mid / filters[0], filter_list=filters,
                       m_blocks_list=tuple(blocks[i] for i in range(len(blocks))), kernel_size=kernel,
                       groups_width=groups_width, n_classes=n_classes)


def load_net1d(state: dict[str, torch.Tensor]) -> tuple[Net1D, tuple[str, ...]]:
    """A Net1D built from the checkpoint's shapes, every used key mapped and shape-checked.

    Returns (network in eval mode, the ignored BatchNorm keys).
    """
    cfg = config_from_state(state)
    model = Net1D(cfg)
    own = model.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    ignored: list[str] = []
    for key, tensor in state.items():
        name = our_name(key)
        if name is None:
            ignored.append(key)
            continue
        if name not in own:
            raise CheckpointError(f"ECGFounder checkpoint key '{key}' has no place in Net1D {cfg}")
        if tuple(tensor.shape) != tuple(own[name].shape):
            raise CheckpointError(f"shape mismatch for '{key}': checkpoint {tuple(tensor.shape)}, "
                                  f"Net1D needs {tuple(own[name].shape)}")
        mapped[name] = tensor
    missing = sorted(set(own) - set(mapped))
    if missing:
        raise CheckpointError(f"ECGFounder checkpoint lacks {missing[:6]}{'...' if len(missing) > 6 else ''}")
    model.load_state_dict(mapped, strict=True)
    log.info("loaded ECGFounder Net1D (%d stages, dim %d); ignored %d unused BatchNorm tensors",
             len(cfg.filter_list), cfg.dim, len(ignored))
    return model.eval(), tuple(ignored)
