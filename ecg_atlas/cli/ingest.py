"""`ecg-atlas ingest PATH... [--metadata CSV]`: embed and store ECG files through the server.

Directories are searched recursively for every format the readers know (WFDB, CODE-15 HDF5,
NumPy). An ECG's id is its path relative to the directory given, without extension
(``cinc_cpsc2018/A0001``). Resumable: ids the store already holds are skipped, so re-running after
an interruption sends only what is missing.

Metadata CSV: one row per ECG, matched on ``--id-column``; ``--patient-column`` becomes the
patient id. Each other column gets one type for the whole file: integer, number, true/false, or
text; a column where any value contains ``;`` becomes a label list (``AF;RBBB``). Empty cells are
left unset. Header fields the reader found (age, sex, dx) are used where the CSV has no value.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from collections import Counter
from pathlib import Path

from ecg_atlas.cli._client import add_client_args, connect, print_json, rpc_errors
from ecg_atlas.errors import AtlasError
from ecg_atlas.index.schema import check_metadata_name

#: Reader metadata worth storing when no CSV value is given (normalised by the WFDB reader).
HEADER_FIELDS = ("age", "sex", "dx")
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
    p.add_argument("--replace", action="store_true", help="re-embed and overwrite ids already stored")
    p.add_argument("--workers", type=int, default=2, help="threads reading files ahead of the stream")
    add_client_args(p)
    p.set_defaults(func=run)


def read_metadata_csv(path: Path, id_column: str, patient_column: str | None,
                      columns: list[str] | None) -> tuple[dict[str, str | None], dict[str, dict]]:
    """(ecg_id -> patient_id, ecg_id -> typed metadata) from a CSV file."""
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
    parsers = {c: _column_parser([r[c] for r in rows]) for c in wanted}
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


def _column_parser(values: list[str]):
    present = [v for v in values if v != ""]
    if any(";" in v for v in present):
        return lambda v: [x.strip() for x in v.split(";") if x.strip()]
    for parse in (int, float, _bool):
        try:
            for v in present:
                parse(v)
            return parse
        except ValueError:
            continue
    return str


def _bool(value: str) -> bool:
    lowered = value.lower()
    if lowered not in ("true", "false"):
        raise ValueError(value)
    return lowered == "true"


def source_uri(source) -> str:
    path = os.path.abspath(source.path)  # absolute, without a realpath walk per file
    return path if source.row is None else f"{path}#{source.row}"


@rpc_errors
def run(args: argparse.Namespace) -> int:
    patients, metadata = {}, {}
    if args.metadata is not None:
        columns = [c.strip() for c in args.columns.split(",")] if args.columns else None
        patients, metadata = read_metadata_csv(args.metadata, args.id_column, args.patient_column, columns)
    with connect(args) as client:
        result = ingest_files(client, args.paths, patients=patients, metadata=metadata, replace=args.replace,
                              workers=args.workers)
    if args.json:
        print_json(result)
    else:
        print(f"stored {result['stored']} of {result['found']} ECGs ({result['skipped_existing']} already stored, "
              f"{result['failed']} failed) in {result['seconds']:.1f} s, {result['ecgs_per_s']} ECGs/s")
        for reason, count in result["failure_reasons"].items():
            print(f"  failed {count}: {reason}")
        if result["without_metadata"]:
            print(f"  {result['without_metadata']} ECGs had no row in {args.metadata}")
    return 0 if result["stored"] or result["skipped_existing"] else 1


def ingest_files(client, paths, *, patients: dict | None = None, metadata: dict | None = None,
                 replace: bool = False, workers: int = 2) -> dict:
    """Stream every ECG under `paths` to the server; a summary dict (counts, errors, timing)."""
    from tqdm import tqdm

    from ecg_atlas.client import IngestItem, ingest_request, timing_dict
    from ecg_atlas.embedder.discover import find_ecgs, read_source
    from ecg_atlas.embedder.prefetch import prefetch

    patients, metadata = patients or {}, metadata or {}
    sources = list(find_ecgs(paths))
    if not sources:
        raise AtlasError("no ECG files found under the given paths (looked for .hea, .h5/.hdf5, .npy/.npz)")
    started = time.perf_counter()
    stored_already: set[str] = set()
    if not replace:  # resume: ask which ids the store holds
        ids = [s.ecg_id for s in sources]
        for i in range(0, len(ids), EXISTS_CHUNK):
            found, _ = client.get(ids[i:i + EXISTS_CHUNK])
            stored_already.update(e.ecg_id for e in found)
    todo = [s for s in sources if s.ecg_id not in stored_already]
    local_errors: dict[str, str] = {}

    with tqdm(total=len(todo), unit="ECG", desc="ingesting", disable=None) as bar:
        def requests():
            for source, recording in prefetch(todo, read_source, workers=workers):
                bar.update(1)
                if isinstance(recording, Exception):
                    if not isinstance(recording, (AtlasError, ValueError, OSError)):
                        raise recording
                    local_errors[source.ecg_id] = str(recording)
                    continue
                meta = {k: recording.metadata[k] for k in HEADER_FIELDS
                        if recording.metadata.get(k) not in (None, [], "")}
                meta.update(metadata.get(source.ecg_id, {}))
                yield ingest_request(IngestItem.from_recording(
                    source.ecg_id, recording, patient_id=patients.get(source.ecg_id), metadata=meta,
                    replace=replace, source=source_uri(source)))

        summary = client.ingest(requests()) if todo else None
    elapsed = time.perf_counter() - started
    errors = {e.ecg_id: f"{e.code}: {e.message}" for e in summary.errors} if summary else {}
    errors.update({k: f"UNREADABLE: {v}" for k, v in local_errors.items()})
    stored = summary.stored if summary else 0
    return {
        "found": len(sources), "stored": stored,
        "skipped_existing": len(stored_already) + (summary.skipped_existing if summary else 0),
        "failed": len(errors), "segments": summary.segments if summary else 0, "seconds": round(elapsed, 2),
        "ecgs_per_s": round(stored / elapsed, 2) if elapsed else None,
        "without_metadata": sum(1 for s in todo if metadata and s.ecg_id not in metadata),
        "failure_reasons": dict(Counter(_reason(m) for m in errors.values())),
        "server_timing_ms": timing_dict(summary.timing) if summary else {},
        "errors": errors,
    }


def _reason(message: str) -> str:
    """The kind of failure without the ECG-specific numbers: the code and the first clause."""
    code, _, text = message.partition(": ")
    return f"{code}: {text.split(';')[0].split(':')[0][:80]}"
