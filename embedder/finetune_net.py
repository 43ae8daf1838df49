"""Trainable copies of the encoders, for fine-tuning: ``TrainableNetwork``.

``BaseEncoder.trainable()`` hands one out: a NEW module holding a float32 CPU copy of the encoder's
weights as its family publishes them (ECG-FM's and HuBERT-ECG's weight-norm pairs unfolded, rebuilt
from the checkpoint or the seed, never from the inference module, which folds them and may run in
bfloat16 or int8), with the family's fine-tuning recipe applied: its dropouts (active in ``train()``
mode only), its frozen parts (``requires_grad`` off, kept in eval mode; ECG-FM's conv feature
extractor also runs under ``no_grad``), its optimizer and schedule.

``forward(x)``: (B, 12, N) model-ready windows → (B, dim) pooled, exactly as the encoder pools
(``eval()`` mode gives ``encoder.embed``'s vectors). The classifier head on top is the trainer's
``nn.Linear(dim, n_outputs)``; ``raw_layout(head)`` writes network + head back in the family's
own file layout (what ``embedder/finetuned.py`` saves and the family's loader reads).

Each family module (``encoders/ecgfm.py``, ``hubert_ecg.py``, ``ecgfounder.py``) holds its
subclass and its ``RECIPE``: every setting with the file of the family's repository it comes from.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

from ecg_atlas.errors import AtlasError

#: recipe["optimizer"] values
ADAM, ADAMW = "adam", "adamw"
#: recipe["schedule"] values: constant lr; linear warm-up then linear decay to 0 (``warmup_fraction``);
#: lr x ``plateau_factor`` after ``plateau_patience`` evaluations without a validation gain
FIXED, LINEAR_WARMUP_DECAY, PLATEAU = "fixed", "linear-warmup-decay", "reduce-on-plateau"
#: the recipe fields every family states (``check_recipe``)
RECIPE_FIELDS = ("family", "source", "optimizer", "lr", "betas", "eps", "weight_decay", "schedule", "batch_size",
                 "pooled_dropout", "frozen", "masking", "loss")


def check_recipe(recipe: dict) -> dict:
    missing = [field for field in RECIPE_FIELDS if field not in recipe]
    if missing:
        raise AtlasError(f"fine-tuning recipe lacks {', '.join(missing)}")
    if recipe["optimizer"] not in (ADAM, ADAMW):
        raise AtlasError(f"recipe optimizer must be {ADAM} or {ADAMW}, got {recipe['optimizer']!r}")
    if recipe["schedule"] not in (FIXED, LINEAR_WARMUP_DECAY, PLATEAU):
        raise AtlasError(f"recipe schedule must be one of {FIXED}, {LINEAR_WARMUP_DECAY}, {PLATEAU}, "
                         f"got {recipe['schedule']!r}")
    return recipe


class TrainableNetwork(nn.Module):
    """A family's network, trainable: ``forward`` → pooled (B, dim); see the module docstring.

    Subclasses give ``family``, ``pooled`` (the family's own pooling of its last layer) and
    ``raw_layout``. The wrapped network is ``self.network`` (state-dict keys ``network.*``).
    """

    family: str = ""

    def __init__(self, network: nn.Module, *, dim: int, recipe: dict, frozen: Iterable[nn.Module] = ()):
        super().__init__()
        self.network = network.float().cpu()
        self.dim = int(dim)
        self.recipe = check_recipe(dict(recipe))
        self.pooled_dropout = nn.Dropout(float(recipe["pooled_dropout"]))
        self._frozen = tuple(frozen)  # a plain tuple: not registered twice as submodules
        for module in self._frozen:
            module.requires_grad_(False)
        self.train()

    def train(self, mode: bool = True) -> "TrainableNetwork":
        super().train(mode)
        for module in self._frozen:  # frozen parts never switch their dropouts on
            module.eval()
        return self

    # -- forward ------------------------------------------------------------------------------------
    def pooled(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 12, N) → (B, dim) float32, pooled as the encoder pools (no pooled dropout)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 3:
            raise AtlasError(f"a trainable network takes (batch, 12, samples) windows, got {tuple(x.shape)}")
        return self.pooled_dropout(self.pooled(x))

    # -- optimisation -------------------------------------------------------------------------------
    def param_groups(self, lr: float, weight_decay: float) -> list[dict]:
        """The trainable parameters (frozen parts left out), one group: every published recipe
        applies one lr and one weight decay to all the weights it trains."""
        params = [p for p in self.parameters() if p.requires_grad]
        return [{"params": params, "lr": float(lr), "weight_decay": float(weight_decay)}]

    def optimizer(self, param_groups: list[dict]) -> torch.optim.Optimizer:
        """The recipe's optimizer (Adam or AdamW, its betas and eps) over ``param_groups``
        (this network's ``param_groups`` plus the head's)."""
        kind = torch.optim.AdamW if self.recipe["optimizer"] == ADAMW else torch.optim.Adam
        return kind(param_groups, betas=tuple(self.recipe["betas"]), eps=float(self.recipe["eps"]))

    def scheduler(self, optimizer: torch.optim.Optimizer, total_updates: int):
        """The recipe's learning-rate schedule over ``total_updates`` optimizer steps.

        ``fixed`` / ``linear-warmup-decay``: a ``LambdaLR``, stepped after every update;
        ``reduce-on-plateau``: a ``ReduceLROnPlateau`` (mode max), stepped with the validation
        macro AUROC after every evaluation.
        """
        schedule = self.recipe["schedule"]
        if schedule == PLATEAU:
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, mode="max", factor=float(self.recipe["plateau_factor"]),
                patience=int(self.recipe["plateau_patience"]))
        if schedule == FIXED:
            return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        warmup = math.ceil(float(self.recipe["warmup_fraction"]) * max(1, total_updates))
        total = max(1, total_updates)

        def factor(step: int) -> float:  # transformers' get_linear_schedule_with_warmup
            if step < warmup:
                return step / max(1, warmup)
            return max(0.0, (total - step) / max(1, total - warmup))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    # -- back to the family's layout ----------------------------------------------------------------
    def raw_layout(self, head: nn.Linear) -> dict:
        """The network and ``head`` as the family's own fine-tuned file holds them (the object
        ``torch.save`` writes; the family's loader reads it back)."""
        raise NotImplementedError

    def describe(self) -> dict:
        trainable = sum(p.numel() for p in self.parameters() if p.requires_grad)
        return {"family": self.family, "dim": self.dim, "parameters": sum(p.numel() for p in self.parameters()),
                "trainable_parameters": trainable}


def head_tensors(head: nn.Linear, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The head's (weight, bias) as float32 CPU tensors, checked against the pooled width."""
    if not isinstance(head, nn.Linear) or head.in_features != dim or head.bias is None:
        raise AtlasError(f"the classifier head must be nn.Linear({dim}, n_outputs) with a bias, got {head!r}")
    return head.weight.detach().float().cpu().clone(), head.bias.detach().float().cpu().clone()


def cpu_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """A detached float32 CPU copy of ``module``'s state dict (what a file stores)."""
    return {k: v.detach().cpu().clone() if not v.is_floating_point() else v.detach().float().cpu().clone()
            for k, v in module.state_dict().items()}
