"""Where a stored ECG's signal comes from when something needs it again (Explain, exemplar
grids, probe baselines, the web atlas): the one place that answers "give me ECG X's samples".

1. The store's own copy (index/signal_copy.py): the samples exactly as they were ingested. The
   default; it works when clients and server share no disk.
2. Otherwise, files under the data roots the operator named (``serve --data-root DIR``): the
   stored ``source`` is looked up under each root (a relative source is joined to it; an
   absolute one must lie inside it), and the resolved path, symlinks included, must still lie
   inside that root. A source that names anything else is never opened, not even to test that
   it exists. Files inside a root are the operator's own and are trusted as such.

Whatever is missing — no copy, no root, a source outside every root, a file that is gone — the
answer is the same ``SignalUnavailableError`` with the same message, so a caller learns nothing
about the server's disk.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from ecg_atlas.errors import AtlasError, SignalUnavailableError

log = logging.getLogger(__name__)
#: stored copies read per query by ``SignalSource.recordings``
BATCH = 64
_UNREAD = object()  # ``recording``'s marker: the stored copy is still to be read


class SignalSource:
    """Recordings of stored ECGs from `store`'s copies, else from files under `data_roots`.

    `paths` (ecg_id -> file) are files the *local* caller named for this run (the command line's
    own ECG files); the server never passes any.
    """

    def __init__(self, store, data_roots: Sequence[str | os.PathLike] = (),
                 paths: dict[str, str] | None = None) -> None:
        self.store = store
        # (the root as named, the root with its symlinks resolved)
        self.roots = [(Path(os.path.abspath(r)), Path(os.path.realpath(r))) for r in data_roots]
        self.paths = dict(paths or {})

    def recording(self, ecg_id: str, kept=_UNREAD):
        """The stored ECG's `Recording`; SignalUnavailableError when none can be served.
        NotFoundError when the ECG is not stored at all. `kept`: its stored copy, when the caller
        has already read it (``recordings`` reads them in batches)."""
        from ecg_atlas.embedder.readers import read_ecg

        if kept is _UNREAD:
            kept = self.store.signal(ecg_id)
        if kept is not None:
            return _from_copy(kept, ecg_id)
        if ecg_id in self.paths:
            return read_ecg(self.paths[ecg_id])
        path = self._under_a_root(self.store.get([ecg_id], columns=["source"])[0]["source"])
        if path is not None:
            try:
                return read_ecg(path)
            except AtlasError as exc:
                log.debug("cannot read a stored ECG's source under a data root: %s", exc)
        raise SignalUnavailableError(
            f"ECG {ecg_id!r} has no signal this server can serve: the store kept no copy of it and no "
            f"data root holds its source. Send the ECG itself instead")

    def recordings(self, ecg_ids: Sequence[str]) -> list:
        """One Recording per id, None where none can be served. The stored copies are read
        ``BATCH`` at a time (one query each: a lookup costs the same for one id or many)."""
        out = []
        for start in range(0, len(ecg_ids), BATCH):
            chunk = list(ecg_ids[start:start + BATCH])
            try:
                kept = self.store.signals(chunk)
            except AtlasError:  # an id not stored: each answers for itself below
                kept = {}
            for ecg_id in chunk:
                try:
                    out.append(self.recording(ecg_id, kept.get(ecg_id, _UNREAD)))
                except (AtlasError, OSError) as exc:
                    log.debug("no signal for a stored ECG: %s", exc)
                    out.append(None)
        return out

    def _under_a_root(self, source: str | None) -> Path | None:
        """The file `source` names inside a data root (symlinks resolved), or None."""
        if not source or not self.roots or "\x00" in source:
            return None
        for named, real in self.roots:
            candidate = Path(os.path.normpath(source if os.path.isabs(source) else named / source))
            if not (candidate.is_relative_to(named) or candidate.is_relative_to(real)):
                continue  # outside this root as written: not even looked at
            # WFDB sources name a record ("A0001") whose files carry suffixes: try both forms.
            for path in (candidate, candidate.with_name(candidate.name + ".hea")):
                resolved = Path(os.path.realpath(path))
                if resolved.is_relative_to(real) and resolved.is_file():
                    return resolved
        return None


def _from_copy(kept, ecg_id: str):
    from ecg_atlas.embedder.readers import recording_from_array
    from ecg_atlas.embedder.recording import DigitalSamples, Recording
    from ecg_atlas.index.signal_copy import INT16

    samples = kept.array()
    if kept.sample_format == INT16:
        return Recording(None, kept.fs, list(kept.lead_names), source=ecg_id,
                         digital=DigitalSamples(samples, kept.gain, kept.baseline))
    return recording_from_array(samples, kept.fs, list(kept.lead_names), source=ecg_id)
