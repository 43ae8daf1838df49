"""Client-side ingest: every ECG under some paths read here and streamed to the server's Ingest
RPC (what `ecg-atlas ingest` and the quickstart run).

Resumable: ids the store already holds are skipped, so re-running after an interruption sends
only what is missing. Files are read ahead of the stream on threads; a file that cannot be read
is one refusal in the summary, never the end of the stream. This side never imports torch.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter

from ecg_atlas.errors import AtlasError
from ecg_atlas.progress import Progress
from ecg_atlas.refusal import read_refusal

from .pseudonym import PatientPseudonymiser, pseudonym_in_file
from .sources import header_metadata, source_uri

#: Ids asked about per Get when looking for what the store holds already.
EXISTS_CHUNK = 500


def suggested_prefix(ecg_ids: list[str], metadata: dict) -> str | None:
    """A prefix that would make ids match the metadata rows, when none matches as given."""
    if not metadata or not ecg_ids or any(i in metadata for i in ecg_ids):
        return None
    first = ecg_ids[0]
    for key in metadata:
        if key.endswith("/" + first):
            prefix = key[: -len(first)]
            return prefix if sum(prefix + i in metadata for i in ecg_ids) > len(ecg_ids) // 2 else None
    return None


def ingest_files(client, paths, *, patients: dict | None = None, metadata: dict | None = None,
                 replace: bool = False, workers: int = 2, pseudonymiser: PatientPseudonymiser | None = None,
                 id_prefix: str = "") -> dict:
    """Stream every ECG under `paths` to the server; a summary dict (counts, errors, timing).

    A patient id found in a file is used (as its pseudonym) only with a ``pseudonymiser``; a
    `patients` entry (a metadata CSV's patient column) always wins."""
    from ecg_atlas.client import IngestItem, ingest_request, timing_dict
    from ecg_atlas.embedder.discover import find_ecgs, read_source
    from ecg_atlas.embedder.prefetch import prefetch

    patients, metadata = patients or {}, metadata or {}
    sources = [dataclasses.replace(s, ecg_id=id_prefix + s.ecg_id) for s in find_ecgs(paths)]
    if not sources:
        raise AtlasError("no ECG files found under the given paths (looked for .hea, .h5/.hdf5, .npy/.npz, "
                         "and MUSE/Sierra/HL7 XML, DICOM, SCP-ECG and EDF exports)")
    started = time.perf_counter()
    stored_already: set[str] = set()
    if not replace:  # resume: ask which ids the store holds
        ids = [s.ecg_id for s in sources]
        for i in range(0, len(ids), EXISTS_CHUNK):
            found, _ = client.get(ids[i:i + EXISTS_CHUNK])
            stored_already.update(e.ecg_id for e in found)
    todo = [s for s in sources if s.ecg_id not in stored_already]
    local_errors: dict[str, tuple[str, str]] = {}  # ecg_id -> (reason, message): refused while reading

    def request_for(source):
        """One file read and made into its request, on a reader thread."""
        recording = read_source(source)
        meta = header_metadata(recording)
        meta.update(metadata.get(source.ecg_id, {}))
        patient_id = patients.get(source.ecg_id)
        if patient_id is None:
            patient_id = pseudonym_in_file(recording, pseudonymiser)
        return ingest_request(IngestItem.from_recording(source.ecg_id, recording, patient_id=patient_id,
                                                        metadata=meta, replace=replace,
                                                        source=source_uri(source.path, source.row)))

    with Progress("ingesting", len(todo), "ECGs") as bar:
        def requests():
            # Everything that can fail for one file runs in `request_for`: an exception escaping
            # this generator would end the whole gRPC stream ("Exception iterating requests!").
            for source, request in prefetch(todo, request_for, workers=workers):
                bar.update(1)
                if isinstance(request, Exception):
                    error = read_refusal(request, source.ecg_id)
                    local_errors[source.ecg_id] = (error.reason, str(error))
                    continue
                yield request

        summary = client.ingest(requests()) if todo else None
    elapsed = time.perf_counter() - started
    reasons = {e.ecg_id: (e.reason or "invalid", e.message) for e in summary.errors} if summary else {}
    errors = {e.ecg_id: f"{e.code} ({e.reason}): {e.message}" for e in summary.errors} if summary else {}
    errors.update({k: f"UNREADABLE ({reason}): {message}" for k, (reason, message) in local_errors.items()})
    reasons.update(local_errors)
    stored = summary.stored if summary else 0
    return {
        "found": len(sources), "stored": stored,
        "skipped_existing": len(stored_already) + (summary.skipped_existing if summary else 0),
        "failed": len(errors), "segments": summary.segments if summary else 0, "seconds": round(elapsed, 2),
        "ecgs_per_s": round(stored / elapsed, 2) if elapsed else None,
        "without_metadata": sum(1 for s in todo if metadata and s.ecg_id not in metadata),
        "suggested_id_prefix": suggested_prefix([s.ecg_id for s in sources], metadata),
        "failure_reasons": dict(Counter(reason for reason, _ in reasons.values())),
        "failure_examples": {reason: message for reason, message in reasons.values()},
        "failed_by_reason": {r: sorted(i for i, (reason, _) in reasons.items() if reason == r) for r in
                             dict.fromkeys(reason for reason, _ in reasons.values())},
        "server_timing_ms": timing_dict(summary.timing) if summary else {},
        "errors": errors,
    }
