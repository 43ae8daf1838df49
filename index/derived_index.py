"""The derived search index: the store's rows made searchable, and rebuilt from them when in doubt.

DuckDB's rows are the source of truth; this module keeps the index beside them through its whole
life. It sees the rows only through `Rows`, a few callables the store hands it (no database
connection, nothing of the store's own state), so it can be driven by any source of
(sequence number, vector) rows:

- **open**: load the file that index.json names when it belongs to this store and is intact
  (store id, encoder, kind, file format, the file's sha256, its entry count); otherwise log a
  WARNING saying why and rebuild. A kind other than the one asked for, or an ivfpq index built for
  another ``--index-memory`` budget, is rebuilt too (logged at INFO). Then catch up with the rows:
  add what the index lacks, drop what was deleted (a crash between a commit and a save loses
  nothing).
- **build**: a fresh index filled from the rows; IVF / IVF-PQ are trained on a sample (IVF-PQ
  re-ranks with the rows' exact vectors, read through `Rows.scan`), and IVF / HNSW / IVF-PQ tune
  their own search breadth for recall (`VectorIndex.tune`) against exact top-10 of sampled rows.
- **apply / remove / compact**: a committed write's changes (an IVF store trains once it holds
  enough rows); after compaction, IVF and HNSW are rebuilt without what was deleted.
- **save**: the index file, then index.json naming it (the commit point of a save), each written
  with `atomic.write_atomic`; older index files are removed after.

Files in the store directory::

    index.json            which index file is current, its kind, the highest sequence number it
                          holds, the file's sha256 and entry count, the store's id, the memory
                          budget an ivfpq index was built for (``index_memory``), and the
                          backend's tuned search parameters (nprobe / efSearch, recall)
    index-<seq>-<tag>.*   the index file (FAISS, or npz for the torch backend)
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ecg_atlas.atomic import sha256_file, write_atomic
from ecg_atlas.errors import StoreError, without_paths

from .backends import TRAINED_KINDS, VectorIndex, exact_top_k, load_index, new_index, training_sample_size

if TYPE_CHECKING:
    from .types import EncoderIdentity

# The store's logger: an operator follows a store's life, its index included, under one name.
log = logging.getLogger("ecg_atlas.index.store")

INDEX_META = "index.json"
#: Version of index.json's layout; another version is rebuilt from the rows.
FORMAT_VERSION = 1
#: Stored vectors used as queries when tuning an approximate index for recall.
RECALL_QUERIES = 200


@dataclass(frozen=True)
class Rows:
    """The rows an index is derived from, as the store exposes them. Ids are the rows' int64
    sequence numbers; vectors are L2-normalised float32 (n, dim)."""

    #: (ids, vectors) chunks of every row (None), or of the rows whose ids are given.
    scan: Callable[[np.ndarray | None], Iterator[tuple[np.ndarray, np.ndarray]]]
    #: Every row's id, sorted.
    ids: Callable[[], np.ndarray]
    #: How many rows there are.
    count: Callable[[], int]
    #: (ids, vectors) of n rows drawn at random, the same ones each time for the same rows.
    sample: Callable[[int], tuple[np.ndarray, np.ndarray]]


def read_meta(directory: Path) -> dict | None:
    """The saved index.json, or None when there is none (or it is unreadable)."""
    try:
        with open(directory / INDEX_META) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _budget(index_memory: int | None) -> str:
    return "(default code size)" if index_memory is None else f"{index_memory / 2**20:.4g} MiB"


def _file_entries(index: VectorIndex) -> int:
    """Vectors the saved file holds (tombstones are not saved: HNSW keeps its dead nodes)."""
    return len(index) + len(getattr(index, "tombstones", ()))


class DerivedIndex:
    """The search index of one store's rows, from opening (or building) to saving.

    Not thread-safe: the store calls it under its write lock (searches read `index` under the
    read lock).
    """

    def __init__(self, directory: Path, rows: Rows, *, store_uuid: str, identity: EncoderIdentity,
                 kind_requested: str, backend: str, ivf_min_train: int, index_memory: int | None = None) -> None:
        """directory: where index.json and the index file live. identity: the store's encoder
        (recorded in index.json, and its `dim`). kind_requested: "flat", "ivf", "hnsw" or "ivfpq".
        backend: a `backends.resolve_backend` name. ivf_min_train: an "ivf" / "ivfpq" store
        searches exactly until it holds this many rows, then trains. index_memory: the byte
        budget an "ivfpq" index is sized to (`backends.ivfpq_params`; None: its default)."""
        self.directory = directory
        self.rows = rows
        self.store_uuid = store_uuid
        self.identity = identity
        self.kind_requested = kind_requested
        self.backend = backend
        self.ivf_min_train = ivf_min_train
        self.index_memory = index_memory
        self.index: VectorIndex | None = None
        #: Entries added or removed since the file was last saved.
        self.unsaved = 0
        #: The saved file is not this index (rebuilt since): save even with nothing unsaved.
        self.file_stale = False

    @property
    def needs_save(self) -> bool:
        return self.unsaved > 0 or self.file_stale

    def kind_label(self) -> str:
        """The kind searching now, as `Info` reports it."""
        if self.kind_requested in TRAINED_KINDS and self.index.kind == "flat":
            return f"flat ({self.kind_requested} trains at {self.ivf_min_train} ECGs)"
        return self.index.kind

    # -----------------------------------------------------------------------------------------
    # Opening: load the saved file if it is ours and intact, else rebuild; then catch up

    def open(self, meta: dict | None, high_water_seq: int) -> None:
        """Load the index that `meta` (index.json, see `read_meta`) names, or rebuild it from the
        rows; then catch it up with the rows. high_water_seq: the highest sequence number the
        store has handed out (a saved index past it is from a store restored from a copy)."""
        index = None
        if meta is not None and meta.get("kind_requested") != self.kind_requested:
            log.info("index kind changed from %s to %s; building it from DuckDB", meta.get("kind_requested"),
                     self.kind_requested)
        elif meta is not None and meta.get("kind") == "ivfpq" and meta.get("index_memory") != self.index_memory:
            # Its code size was chosen for another budget: rebuilt so that it fits the one asked for.
            log.info("ivfpq index was built for --index-memory %s, now %s; building it from DuckDB",
                     _budget(meta.get("index_memory")), _budget(self.index_memory))
        elif meta is not None:
            try:
                index = self._load(meta, high_water_seq)
            except Exception as exc:  # any unreadable index is rebuilt from the rows
                log.warning("index file not usable (%s); rebuilding from DuckDB", without_paths(str(exc)))
        if index is None:
            self.rebuild()
            return
        self.index = index
        self.catch_up()

    def _load(self, meta: dict, high_water_seq: int) -> VectorIndex:
        expected = {"format_version": FORMAT_VERSION, "store_uuid": self.store_uuid,
                    "identity": asdict(self.identity), "kind_requested": self.kind_requested}
        for key, value in expected.items():
            if meta.get(key) != value:
                raise StoreError(f"index.json {key} is {meta.get(key)!r}, expected {value!r}")
        if meta.get("high_water_seq", 0) > high_water_seq:
            raise StoreError("index is newer than the database (database restored from an older copy?)")
        kind = meta["kind"]
        if kind != self._effective_kind() and not (kind == self.kind_requested and kind in TRAINED_KINDS):
            raise StoreError(f"index is {kind}, this store now needs {self._effective_kind()}")
        wanted_format = "npz" if self.backend.startswith("torch") else "faiss"
        if meta.get("format") != wanted_format:
            raise StoreError(f"index file is {meta.get('format')}, backend {self.backend} reads {wanted_format}")
        # The JSON alone does not tie the file to this store: a file copied over it (from another
        # store, or an older save of this one) would map every vector to the wrong row.
        file = self.directory / meta["file"]
        if not meta.get("sha256"):
            raise StoreError("index.json records no digest of its index file (written by an older version)")
        if sha256_file(file) != meta["sha256"]:
            raise StoreError("index file does not match its index.json (digest differs: copied from another "
                             "store or an older state?)")
        index = load_index(str(file), self.backend, kind, self.identity.dim)
        if len(index) != meta.get("file_entries"):
            raise StoreError(f"index file holds {len(index)} entries, its index.json says {meta.get('file_entries')}")
        index.apply_tuning(meta)
        index.use_exact_vectors(self._exact_vectors)
        return index

    def _exact_vectors(self, ids: np.ndarray) -> np.ndarray:
        """The stored (normalised) vectors of the rows `ids` (sorted), in that order: what an
        ivfpq index re-ranks with."""
        out = np.empty((len(ids), self.identity.dim), dtype=np.float32)
        found = 0
        for chunk_ids, vectors in self.rows.scan(ids):
            out[np.searchsorted(ids, chunk_ids)] = vectors
            found += len(chunk_ids)
        if found != len(ids):
            raise StoreError(f"{len(ids) - found} index entries have no row (index not caught up with DuckDB)")
        return out

    def catch_up(self) -> None:
        """Add the rows the index lacks; remove entries whose rows are gone."""
        index = self.index
        row_ids = self.rows.ids()
        held = index.ids()
        extra = np.setdiff1d(held, row_ids, assume_unique=True)
        missing = np.setdiff1d(row_ids, held, assume_unique=True)
        if len(extra):
            index.remove(extra)
        if len(missing):
            for ids, vectors in self.rows.scan(missing if len(missing) < len(row_ids) else None):
                index.add(ids, vectors)
        if len(extra) or len(missing):
            log.info("index caught up with DuckDB: %d added, %d removed", len(missing), len(extra))
            self.unsaved += len(extra) + len(missing)

    # -----------------------------------------------------------------------------------------
    # Building

    def _effective_kind(self) -> str:
        """What to build now: an IVF store searches exactly until it has enough rows to train."""
        if self.kind_requested in TRAINED_KINDS and self.rows.count() < self.ivf_min_train:
            return "flat"
        return self.kind_requested

    def rebuild(self) -> None:
        """Replace the index with a fresh one built from the rows (saved at the next save)."""
        self.index = self._build()
        self.file_stale = True

    def _build(self) -> VectorIndex:
        kind = self._effective_kind()
        dim = self.identity.dim
        if kind == "flat":
            index = new_index(self.backend, kind, dim)
            for ids, vectors in self.rows.scan(None):
                index.add(ids, vectors)
            return index
        n = self.rows.count()
        sample_ids, sample = self.rows.sample(training_sample_size(n, self.ivf_min_train))
        index = new_index(self.backend, kind, dim, training_sample=sample, n_rows=n, memory_budget=self.index_memory)
        index.use_exact_vectors(self._exact_vectors)
        queries, query_ids = sample[:RECALL_QUERIES], sample_ids[:RECALL_QUERIES]
        # Exact top-11 of each query (itself and ten others), merged chunk by chunk while filling.
        truth = np.full((len(queries), 11), -np.inf, dtype=np.float32), np.full((len(queries), 11), -1, np.int64)
        for ids, vectors in self.rows.scan(None):
            index.add(ids, vectors)
            chunk = exact_top_k(queries, vectors, ids, 11)
            merged_scores = np.concatenate([truth[0], chunk[0]], axis=1)
            merged_ids = np.concatenate([truth[1], chunk[1]], axis=1)
            order = np.argsort(-merged_scores, axis=1, kind="stable")[:, :11]
            truth = (np.take_along_axis(merged_scores, order, 1), np.take_along_axis(merged_ids, order, 1))
        index.tune(queries, query_ids, truth[1])
        return index

    # -----------------------------------------------------------------------------------------
    # Changes and saving

    def apply(self, added_ids: np.ndarray, added_vectors: np.ndarray, removed_ids: np.ndarray) -> None:
        """Take in a committed write: `removed_ids` replaced, rows `added_ids` added (the rows
        hold the write already). Builds the index if there is none yet; trains an IVF store
        that has just reached `ivf_min_train` rows."""
        if self.index is None:
            self.rebuild()
        else:
            self.index.remove(removed_ids)
            self.index.add(added_ids, added_vectors)
            if (self.kind_requested in TRAINED_KINDS and self.index.kind == "flat"
                    and len(self.index) >= self.ivf_min_train):
                self.rebuild()
        self.unsaved += len(added_ids) + len(removed_ids)

    def remove(self, ids: np.ndarray) -> None:
        """Take in committed deletes: the rows with `ids` are gone."""
        self.index.remove(ids)
        self.unsaved += len(ids)

    def compact(self) -> None:
        """Drop what deletes left behind: an HNSW index loses its tombstones, an IVF index is
        retrained for the current size (both rebuilt from the rows; a flat index purges on save)."""
        if self.index.kind in ("ivf", "hnsw", "ivfpq"):
            self.rebuild()

    def save(self, high_water_seq: int) -> None:
        """Write the index file, then index.json naming it (the commit point), then drop old files.

        high_water_seq: the highest sequence number the store has handed out. Raises what the
        file system raised (OSError, or RuntimeError from FAISS); no file is left half-written.
        """
        index = self.index
        name = f"index-{high_water_seq:012d}-{uuid.uuid4().hex[:8]}.{index.file_format}"
        digest = write_atomic(self.directory / name, index.save)
        meta = {
            "format_version": FORMAT_VERSION, "store_uuid": self.store_uuid, "identity": asdict(self.identity),
            "kind_requested": self.kind_requested, "kind": index.kind, "format": index.file_format,
            "file": name, "high_water_seq": high_water_seq, "entries": len(index),
            # the budget this index was built for: `open` keeps it only for the same budget
            "file_entries": _file_entries(index), "sha256": digest, "index_memory": self.index_memory,
            **index.tuning(),
        }

        def write_meta(tmp: str) -> None:
            with open(tmp, "w") as f:
                json.dump(meta, f, indent=1)

        write_atomic(self.directory / INDEX_META, write_meta)
        for old in self.directory.glob("index-*"):
            if old.name != name:
                old.unlink(missing_ok=True)
        self.unsaved = 0
        self.file_stale = False
