"""ECG-FM pretraining (wav2vec 2.0 + CMSC + RLM) in plain PyTorch; writes fairseq-signals checkpoints."""

from .objective import PretrainConfig, PretrainingModel, span_mask
from .train import PretrainResult, pretrain

__all__ = ["PretrainConfig", "PretrainResult", "PretrainingModel", "pretrain", "span_mask"]
