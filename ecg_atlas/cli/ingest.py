"""`ecg-atlas ingest PATH... [--metadata CSV]`: embed and store ECG files through the server.

Directories are searched recursively for every format the readers know (WFDB, CODE-15 HDF5,
NumPy, and hospital exports by content: GE MUSE XML, DICOM, Philips Sierra XML, HL7 aECG, SCP-ECG,
EDF). An ECG's id is its path relative to the directory given, without extension
(``cinc_cpsc2018/A0001``). Resumable: ids the store already holds are skipped, so re-running after
an interruption sends only what is missing.

Metadata CSV: one row per ECG, matched on ``--id-column``; ``--patient-column`` becomes the
patient id. Each other column gets one type for the whole file: integer, number, true/false, or
text; a column where any value contains ``;`` becomes a label list (``AF;RBBB``). Empty cells are
left unset. Header fields the reader found (age, sex, dx, acquisition time, device) are used where
the CSV has no value.

Patient ids inside ECG files (hospital exports) become the patient key only as a keyed pseudonym,
HMAC-SHA-256 under the operator's secret from ``--patient-key-file`` or $ECG_ATLAS_PATIENT_KEY;
without a secret no patient key is taken from files. A CSV patient column always wins.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import os
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from ecg_atlas.cli._client import add_client_args, connect, print_json, rpc_errors
from ecg_atlas.errors import AtlasError
from ecg_atlas.index.schema import check_metadata_name, text_column_parser
from ecg_atlas.pseudonym import PatientPseudonymiser, load_pseudonymiser, pseudonym_in_file
from ecg_atlas.refusal import read_refusal

#: Reader metadata worth storing when no CSV value is given (normalised by the WFDB reader).
HEADER_FIELDS = ("age", "sex", "dx", "acquisition_time", "device")
EXISTS_CHUNK = 500


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ingest", help="embed ECG files and store them on the server", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("paths", nargs="+", type=Path, help="ECG files or directories (searched recursively)")
    p.add_argument("--metadata", type=Path, default=None, help="CSV with one row per ECG")
    p.add_argument("--id-column", default="ecg_id", help="CSV column holding the ECG id (default ecg_id)")
    p.add_argument("--patient-column", default=None,
                   help="CSV column holding the patient id (default: patient_id if the CSV has it)")
    p.add_argument("--columns", default=None,
                   help="comma-separated CSV columns to store (default: all but the id and patient columns)")
    p.add_argument("--label-columns", default="",
                   help="comma-separated CSV columns to read as ';'-separated label lists (default: those whose "
                        "values all look like label lists, e.g. 'AF;RBBB')")
    p.add_argument("--id-prefix", default="",
                   help="put this before every id (ids are paths relative to the folder you name, without "
                        "extension: ingesting ecg/cinc_cpsc2018 gives A0001; --id-prefix cinc_cpsc2018/ gives "
                        "cinc_cpsc2018/A0001, as a manifest of the whole ecg/ folder names it)")
    p.add_argument("--patient-key-file", type=Path, default=None,
                   help="secret key (>= 16 bytes) that turns patient ids found in ECG files into pseudonyms "
                        "(default: $ECG_ATLAS_PATIENT_KEY; without either, ids in files are not used)")
    p.add_argument("--replace", action="store_true", help="re-embed and overwrite ids already stored")
    p.add_argument("--workers", type=int, default=2, help="threads reading files ahead of the stream")
    add_client_args(p)
    p.set_defaults(func=run)


def read_metadata_csv(path: Path, id_column: str, patient_column: str | None,
                      columns: list[str] | None, label_columns: Sequence[str] = ()
                      ) -> tuple[dict[str, str | None], dict[str, dict]]:
    """(ecg_id -> patient_id, ecg_id -> typed metadata) from a CSV file; values are typed by the
    store's own text rules (index.schema.text_column_parser), `label_columns` read as label lists."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
            header = rows[0].keys() if rows else []
    except OSError as exc:
        raise AtlasError(f"cannot read metadata CSV {path}: {exc.strerror}") from exc
    if id_column not in header:
        raise AtlasError(f"{path} has no column {id_column!r} (columns: {', '.join(header)}); pass --id-column")
    if patient_column is None and "patient_id" in header:
        patient_column = "patient_id"
    if patient_column is not None and patient_column not in header:
        raise AtlasError(f"{path} has no column {patient_column!r}; pass --patient-column")
    if columns is None:  # every column that can be user metadata (not a fixed store field like duration_s)
        wanted = [c for c in header if c not in (id_column, patient_column) and _usable_name(c)]
    else:
        wanted = columns
        unknown = [c for c in wanted if c not in header]
        if unknown:
            raise AtlasError(f"{path} has no column(s) {', '.join(unknown)}")
        for c in wanted:
            check_metadata_name(c)
    parsers = {c: text_column_parser([r[c] for r in rows], labels=True if c in label_columns else None)
               for c in wanted}
    patients, metadata = {}, {}
    for r in rows:
        ecg_id = r[id_column]
        patients[ecg_id] = (r[patient_column] or None) if patient_column else None
        metadata[ecg_id] = {c: parse(r[c]) for c, parse in parsers.items() if r[c] != ""}
    return patients, metadata


def _usable_name(name: str) -> bool:
    try:
        check_metadata_name(name)
    except AtlasError:
        return False
    return True


def _suggested_prefix(ecg_ids: list[str], metadata: dict) -> str | None:
    """A prefix that would make ids match the metadata rows, when none matches as given."""
    if not metadata or not ecg_ids or any(i in metadata for i in ecg_ids):
        return None
    first = ecg_ids[0]
    for key in metadata:
        if key.endswith("/" + first):
            prefix = key[: -len(first)]
            return prefix if sum(prefix + i in metadata for i in ecg_ids) > len(ecg_ids) // 2 else None
    return None


def source_uri(source) -> str:
    path = os.path.abspath(source.path)  # absolute, without a realpath walk per file
    return path if source.row is None else f"{path}#{source.row}"


@rpc_errors
def run(args: argparse.Namespace) -> int:
    patients, metadata = {}, {}
    if args.metadata is not None:
        columns = [c.strip() for c in args.columns.split(",")] if args.columns else None
        label_columns = [c.strip() for c in args.label_columns.split(",") if c.strip()]
        patients, metadata = read_metadata_csv(args.metadata, args.id_column, args.patient_column, columns,
                                               label_columns)
    pseudonymiser = load_pseudonymiser(args.patient_key_file)
    with connect(args) as client:
        result = ingest_files(client, args.paths, patients=patients, metadata=metadata, replace=args.replace,
                              workers=args.workers, pseudonymiser=pseudonymiser, id_prefix=args.id_prefix)
    if args.json:
        print_json(result)
    else:
        print(f"stored {result['stored']} of {result['found']} ECGs ({result['skipped_existing']} already stored, "
              f"{result['failed']} failed) in {result['seconds']:.1f} s, {result['ecgs_per_s']} ECGs/s")
        for reason, count in result["failure_reasons"].items():
            print(f"  failed {count}: {reason} (e.g. {result['failure_examples'][reason]})")
        if result["without_metadata"]:
            print(f"  {result['without_metadata']} ECGs had no row in {args.metadata}"
                  + (f" (did you mean --id-prefix {result['suggested_id_prefix']}?)"
                     if result.get("suggested_id_prefix") else ""))
    return 0 if result["stored"] or result["skipped_existing"] else 1


def ingest_files(client, paths, *, patients: dict | None = None, metadata: dict | None = None,
                 replace: bool = False, workers: int = 2, pseudonymiser: PatientPseudonymiser | None = None,
                 id_prefix: str = "") -> dict:
    """Stream every ECG under `paths` to the server; a summary dict (counts, errors, timing).

    A patient id found in a file is used (as its pseudonym) only with a ``pseudonymiser``."""
    from tqdm import tqdm

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
        meta = {k: recording.metadata[k] for k in HEADER_FIELDS if recording.metadata.get(k) not in (None, [], "")}
        meta.update(metadata.get(source.ecg_id, {}))
        patient_id = patients.get(source.ecg_id)
        if patient_id is None:
            patient_id = pseudonym_in_file(recording, pseudonymiser)
        return ingest_request(IngestItem.from_recording(source.ecg_id, recording, patient_id=patient_id,
                                                        metadata=meta, replace=replace, source=source_uri(source)))

    with tqdm(total=len(todo), unit="ECG", desc="ingesting", disable=None) as bar:
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
        "suggested_id_prefix": _suggested_prefix([s.ecg_id for s in sources], metadata),
        "failure_reasons": dict(Counter(reason for reason, _ in reasons.values())),
        "failure_examples": {reason: message for reason, message in reasons.values()},
        "server_timing_ms": timing_dict(summary.timing) if summary else {},
        "errors": errors,
    }
