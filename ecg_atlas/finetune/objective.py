"""What a fine-tuning run optimises: the class-weighted loss on the labels, and the network's own
recipe (``embedder/finetune_net.py``: its optimizer, learning rate, weight decay and schedule)
over the network's trainable parameters and the new head.

The loss is the sum over the batch's known label entries divided by the batch's size in entries
(unknown, NaN, labels add nothing), a fixed denominator: N processes with batch b then average to
the gradient of one process with batch N*b, which DistributedDataParallel's mean relies on."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .types import MULTICLASS, FinetuneData


class Loss:
    """Class-weighted loss on a batch given by positions in the train split; NaN labels masked."""

    def __init__(self, data: FinetuneData, train_idx: np.ndarray, dev: torch.device):
        y = data.y[data.segment_record[train_idx]]
        known = ~np.isnan(y)
        self.multiclass = data.task == MULTICLASS
        if self.multiclass:
            classes = np.where(known[:, 0], np.nan_to_num(y[:, 0]), 0).astype(np.int64)
            counts = np.bincount(classes[known[:, 0]], minlength=data.n_outputs)
            weights = known.sum() / (data.n_outputs * np.maximum(counts, 1))
            self.target = torch.from_numpy(classes).to(dev)
            self.known = torch.from_numpy(known[:, 0].astype(np.float32)).to(dev)
        else:
            positives = ((y > 0.5) & known).sum(axis=0)
            weights = ((y <= 0.5) & known).sum(axis=0) / np.maximum(positives, 1)
            self.target = torch.from_numpy(np.nan_to_num(y).astype(np.float32)).to(dev)
            self.known = torch.from_numpy(known.astype(np.float32)).to(dev)
        self.weights = [float(w) for w in weights]
        self.weight = torch.tensor(self.weights, dtype=torch.float32, device=dev)

    def __call__(self, logits: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        logits, known = logits.float(), self.known[at]
        if self.multiclass:
            per = F.cross_entropy(logits, self.target[at], weight=self.weight, reduction="none")
        else:
            per = F.binary_cross_entropy_with_logits(logits, self.target[at], pos_weight=self.weight, reduction="none")
        return (per * known).sum() / per.numel()


def make_optimizer(network: nn.Module, head: nn.Linear, total_updates: int, *, lr: float | None = None,
                   weight_decay: float | None = None) -> tuple[torch.optim.Optimizer, object, float]:
    """The recipe's optimizer over the network's trainable groups and the head, its learning-rate
    schedule (``TrainableNetwork.optimizer`` / ``.scheduler``), and the learning rate used.

    ``lr`` and ``weight_decay`` override the recipe's. Parameters outside ``param_groups`` are
    frozen here (no gradient, so DistributedDataParallel waits for none of them).
    """
    recipe = network.recipe
    lr = float(recipe["lr"]) if lr is None else float(lr)
    wd = float(recipe["weight_decay"]) if weight_decay is None else float(weight_decay)
    groups = [{**g, "params": list(g["params"])} for g in network.param_groups(lr, wd)]
    keep = {id(p) for g in groups for p in g["params"]}
    for p in network.parameters():
        if id(p) not in keep:
            p.requires_grad_(False)
    groups.append({"params": list(head.parameters()), "lr": lr, "weight_decay": wd})
    optimizer = network.optimizer(groups)
    return optimizer, network.scheduler(optimizer, total_updates), lr


def per_update(scheduler) -> bool:
    """True for a schedule stepped after every update; False for one stepped with the validation
    metric after every evaluation (ReduceLROnPlateau)."""
    return not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau)
