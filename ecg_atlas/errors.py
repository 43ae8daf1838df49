"""Errors shared by every part of ECG Atlas.

Each one is raised with a message that tells the person what was wrong with *their* input and
what to do about it; the server maps them onto gRPC status codes.
"""


class AtlasError(Exception):
    """Base class of every error ECG Atlas raises on purpose."""


class InvalidECGError(AtlasError, ValueError):
    """An ECG that cannot be read or preprocessed (corrupt file, NaNs, missing leads, too short...).

    ``reason`` is a short machine-readable code (``too_short``, ``too_few_leads``, ``unreadable``...)
    that summaries and the service's per-item errors group by; the message is for the person.
    """

    def __init__(self, message: str, reason: str = "invalid_ecg"):
        super().__init__(message)
        self.reason = reason


class CheckpointError(AtlasError, ValueError):
    """A file that is not a usable ECG-FM checkpoint (wrong format, truncated, mismatched shapes)."""


class StoreError(AtlasError):
    """The vector store refused an operation (mixed encoders, bad filter, unknown id...)."""


class NotFoundError(StoreError, KeyError):
    """An ecg_id (or other named object) that the store does not hold."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0]) if self.args else ""


class EncoderMismatchError(StoreError):
    """Vectors from another encoder (model, checkpoint, preprocessing or dimension) than the store's."""
