"""The store's value types: the encoder identity a store holds, and what its calls return."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class EncoderIdentity:
    """The encoder every vector in a store comes from; a store holds exactly one."""

    model_id: str
    checkpoint_sha256: str
    preprocessing_version: str
    dim: int

    def describe(self) -> str:
        return (f"model_id={self.model_id!r}, checkpoint sha256={self.checkpoint_sha256[:12]}…, "
                f"preprocessing={self.preprocessing_version!r}, dim={self.dim}")


@dataclass(frozen=True)
class UpsertResult:
    inserted: int
    updated: int


@dataclass(frozen=True)
class ImportResult:
    inserted: int
    skipped_existing: int  # embedded rows whose ecg_id the store held already
    refused: int  # rows not stored: refusals the shards record, and embedded rows refused at import
    #: refused rows per reason code: the shards' own (``too_short`` ...) and the import's
    #: (``shard_rows.IMPORT_REFUSALS``: ``missing_ecg_id``, ``unknown_status``, ``vector_*``)
    refusals: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Hit:
    """One search result: the stored ECG, its cosine similarity, the requested columns."""

    ecg_id: str
    score: float
    metadata: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class StoreInfo:
    path: str
    n_ecgs: int
    n_index_entries: int
    dim: int | None
    identity: EncoderIdentity | None
    index_kind: str
    index_kind_requested: str
    backend: str
    index_settings: dict[str, object]
    columns: dict[str, str]
    high_water_seq: int
    encoder_contract: dict | None = None  # the input contract of the encoder behind the vectors
