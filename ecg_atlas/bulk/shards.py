"""Embedding shards: the Parquet files a bulk embedding job writes and a store imports.

One shard holds one fixed slice of the job's input (items ``shard * size`` up to the next
shard's first), one row per input ECG in input order, in the columns ``index.shard_layout``
describes (the store that imports the shards holds the format).

The Parquet schema metadata names the encoder (``ecg_atlas.model_id``, ``checkpoint_sha256``,
``preprocessing_version``, ``dim``, ``contract``: the keys ``ecg-atlas embed --out x.parquet``
writes) and the shard (``ecg_atlas.shard``, ``ecg_atlas.job``). Files are written with
``ecg_atlas.atomic.write_atomic``: a shard file that exists is complete; every page carries its CRC
checksum, which import verifies (``index.shard_rows``): a shard damaged after it was written is
refused, never imported with altered vectors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ecg_atlas.atomic import write_atomic
from ecg_atlas.errors import AtlasError, ShardError, without_paths
from ecg_atlas.index import schema
from ecg_atlas.index.shard_layout import EMBEDDED, IDENTITY_KEYS, METADATA_PREFIX, REFUSED, shard_schema
from ecg_atlas.index.shard_rows import NOT_A_SHARD, SHARD_UNREADABLE, shard_label

SHARD_PATTERN = "shard-{:06d}.parquet"


@dataclass
class ShardItem:
    """One ECG's outcome, as a shard row holds it."""

    ecg_id: str
    source: str
    patient_id: str | None = None
    metadata: Mapping[str, object] | None = None
    fs: float | None = None
    lead_names: Sequence[str] | None = None
    duration_s: float | None = None
    record_vector: np.ndarray | None = None
    segment_vectors: np.ndarray | None = None
    reason: str | None = None  # set for a refusal
    message: str | None = None


def encoder_identity(encoder) -> dict[str, str]:
    """The schema-metadata entries naming `encoder` (strings, as Parquet keeps them)."""
    return {"model_id": encoder.model_id, "checkpoint_sha256": encoder.checkpoint_sha256,
            "preprocessing_version": encoder.contract.preprocessing_version, "dim": str(encoder.dim),
            "contract": json.dumps(encoder.contract.to_dict())}


def shard_table(items: Sequence[ShardItem], dim: int, identity: Mapping[str, str], *, shard: int,
                job: str) -> pa.Table:
    """The Arrow table of one shard (module docstring)."""
    embedded = [it.reason is None for it in items]
    layout = shard_schema(dim)
    vector_type = layout.field("record_vector").type
    records = np.zeros((len(items), dim), np.float32)
    offsets, flat = [0], []
    for i, it in enumerate(items):
        if it.reason is None:
            records[i] = it.record_vector
            flat.append(np.asarray(it.segment_vectors, np.float32).ravel())
            offsets.append(offsets[-1] + len(it.segment_vectors))
        else:
            offsets.append(offsets[-1])
    values = pa.array(np.concatenate(flat) if flat else np.empty(0, np.float32), pa.float32())
    nulls = pa.array([not e for e in embedded])
    values_of = {
        "ecg_id": [it.ecg_id for it in items],
        "status": [EMBEDDED if e else REFUSED for e in embedded],
        "reason": [it.reason for it in items],
        "message": [it.message for it in items],
        "source": [it.source for it in items],
        "patient_id": [it.patient_id for it in items],
        "fs": [it.fs for it in items],
        "lead_names": [list(it.lead_names) if it.lead_names is not None else None for it in items],
        "duration_s": [it.duration_s for it in items],
        "n_segments": [len(it.segment_vectors) if it.reason is None else None for it in items],
    }
    columns: dict[str, pa.Array] = {
        **{field.name: pa.array(values_of[field.name], field.type) for field in layout if field.name in values_of},
        "record_vector": pa.FixedSizeListArray.from_arrays(pa.array(records.ravel(), pa.float32()), type=vector_type,
                                                           mask=nulls),
        "segment_vectors": pa.ListArray.from_arrays(pa.array(offsets, pa.int32()),
                                                    pa.FixedSizeListArray.from_arrays(values, type=vector_type),
                                                    mask=nulls),
    }
    rows = [dict(it.metadata or {}) for it in items]
    for key, first in sorted(schema.metadata_types(rows).items()):
        schema.check_metadata_name(key)
        if first is None:
            continue
        column = schema.Column(key, schema.infer_type(key, first), user=True)
        columns[METADATA_PREFIX + key] = pa.array([schema.coerce(column, r.get(key)) for r in rows],
                                                  schema.arrow_type(column.type))
    extra = {f"ecg_atlas.{k}": v for k, v in identity.items()}
    extra.update({"ecg_atlas.shard": str(shard), "ecg_atlas.job": job})
    return pa.table(columns).replace_schema_metadata(extra)


def write_shard(path: Path, table: pa.Table) -> None:
    """Write `table` to `path` all or nothing (`ecg_atlas.atomic.write_atomic`)."""
    # Row groups of 8,192 rows: the import reads a row group ahead while it inserts the last.
    # No dictionary for vectors: pyarrow's attempt at one never fits embedding floats, and its
    # fallback pages left zstd nothing to shrink (real embeddings: 0.999 of raw, read 3.5x slower
    # than zstd alone at 0.925; BENCHMARKS.md, Import). Ids, sources and metadata keep dictionaries.
    # Every page carries its CRC checksum: import verifies it (index/shard_rows.py).
    dictionary = [name for name in table.column_names if name not in schema.VECTOR_COLUMNS]
    write_atomic(path, lambda tmp: pq.write_table(table, tmp, compression="zstd", use_dictionary=dictionary,
                                                  row_group_size=8192, write_page_checksum=True))


def read_identity(path: str | Path) -> dict[str, str]:
    """The encoder identity a shard (or an ``embed --out`` Parquet file) records."""
    try:
        meta = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException) as exc:
        raise ShardError(f"cannot read {shard_label(path)} as Parquet ({without_paths(str(exc))})",
                         reason=SHARD_UNREADABLE) from exc
    found = {k.decode().removeprefix("ecg_atlas."): v.decode() for k, v in meta.items()
             if k.decode().startswith("ecg_atlas.")}
    missing = [k for k in IDENTITY_KEYS if k not in found]
    if missing:
        raise ShardError(f"{shard_label(path)} names no encoder ({', '.join(missing)} missing from its Parquet "
                         f"metadata): not written by ecg-atlas embed", reason=NOT_A_SHARD)
    return found


def shard_files(paths: Sequence[str | Path], shown: Sequence[str] | None = None) -> list[Path]:
    """The shard files `paths` name: files as given, folders by their ``shard-*.parquet``.
    `shown`: how messages name each path (default: the path itself)."""
    files: list[Path] = []
    for given, name in zip(map(Path, paths), shown or map(str, paths), strict=True):
        if given.is_dir():
            found = sorted(given.glob("shard-*.parquet"))
            if not found:
                raise AtlasError(f"{name} holds no shard files (shard-*.parquet)")
            files += found
        elif given.is_file():
            files.append(given)
        else:
            raise AtlasError(f"{name} is neither a shard file nor a folder of them")
    return files


def shard_files_under_roots(names: Sequence[str], roots: Sequence[str | Path]) -> list[Path]:
    """`shard_files` for names a client sent, each resolved inside one of the operator's `roots`
    (absolute, or relative to a root; symlinks resolved). A name outside every root is refused
    before anything under it is opened."""
    if not roots:
        raise AtlasError("this server has no data root (serve --data-root DIR): it imports shard files only "
                         "from folders its operator named")
    resolved = [(Path(os.path.abspath(r)), Path(os.path.realpath(r))) for r in roots]
    shown = [_shown(name, resolved) for name in names]
    files = shard_files([_under_a_root(name, resolved, label) for name, label in zip(names, shown)], shown)
    for file in files:  # a folder's entries may be links out of the root
        if not any(Path(os.path.realpath(file)).is_relative_to(real) for _, real in resolved):
            raise AtlasError(f"shard file {file.name} leads outside the server's data roots")
    return files


def _shown(name: str, roots: Sequence[tuple[Path, Path]]) -> str:
    """How messages quote a name a client sent: relative to the data root it names, never an
    absolute server path."""
    if not os.path.isabs(name):
        return repr(name)
    for root in (path for pair in roots for path in pair):
        candidate = Path(os.path.normpath(name))
        if candidate.is_relative_to(root):
            return repr(f"<data root>/{candidate.relative_to(root)}")
    return f"an absolute path outside the data roots (…/{Path(name).name})"


def _under_a_root(name: str, roots: Sequence[tuple[Path, Path]], shown: str) -> Path:
    if name and "\x00" not in name:
        for named, real in roots:
            candidate = Path(os.path.normpath(name if os.path.isabs(name) else named / name))
            if not (candidate.is_relative_to(named) or candidate.is_relative_to(real)):
                continue
            target = Path(os.path.realpath(candidate))
            if target.is_relative_to(real) and target.exists():
                return target
    raise AtlasError(f"{shown} is not a shard file or folder inside the server's data roots")


def identity_of(files: Sequence[Path]):
    """The one `EncoderIdentity` the shard `files` share (refused when they differ)."""
    from ecg_atlas.index.types import EncoderIdentity

    seen: dict[EncoderIdentity, Path] = {}
    for file in files:
        found = read_identity(file)
        seen.setdefault(EncoderIdentity(found["model_id"], found["checkpoint_sha256"],
                                        found["preprocessing_version"], int(found["dim"])), file)
    if len(seen) > 1:
        (a, fa), (b, fb) = list(seen.items())[:2]
        raise AtlasError(f"the shards come from different encoders: {fa.name} from {a.describe()}, {fb.name} from "
                         f"{b.describe()}; import each encoder's shards into its own store")
    return next(iter(seen))
