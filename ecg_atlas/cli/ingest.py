"""`ecg-atlas ingest PATH... [--metadata CSV]`: embed and store ECG files through the server.

Directories are searched recursively for every format the readers know (WFDB, CODE-15 HDF5,
NumPy, and hospital exports by content: GE MUSE XML, DICOM, Philips Sierra XML, HL7 aECG, SCP-ECG,
EDF). An ECG's id is its path relative to the directory given, without extension
(``cinc_cpsc2018/A0001``). Resumable: ids the store already holds are skipped, so re-running after
an interruption sends only what is missing.

Metadata CSV: one row per ECG, matched on ``--id-column``; ``--patient-column`` becomes the
patient id. Each other column gets one type for the whole file: integer, number, true/false, or
text; a column whose values look like code lists (some value holds ``;`` and every item is one
word: ``AF;RBBB``) becomes a label list. Empty cells are left unset; ids are never typed (``00123``
stays ``00123``). `ecg-atlas embed --engine ray --manifest` types a manifest by the same rule.
Header fields the reader found (age, sex, dx, acquisition time, device) are used where the CSV has
no value.

Patient ids inside ECG files (hospital exports) become the patient key only as a keyed pseudonym,
HMAC-SHA-256 under the operator's secret from ``--patient-key-file`` or $ECG_ATLAS_PATIENT_KEY;
without a secret no patient key is taken from files. A CSV patient column always wins.

The summary counts the ECGs refused per reason, with an example message and the ids that failed
(the first 10 per reason; --json lists each with its message). Progress: a bar on a terminal;
piped or logged, a line every $ECG_ATLAS_PROGRESS_EVERY_S seconds (default 10; off: none).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ecg_atlas.cli._client import add_client_args, connect, print_json, rpc_errors
from ecg_atlas.ingest.manifest import read_metadata_csv
from ecg_atlas.ingest.pseudonym import load_pseudonymiser
from ecg_atlas.ingest.stream import ingest_files


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
        for line in failure_lines(result):
            print(line)
        if result["without_metadata"]:
            print(f"  {result['without_metadata']} ECGs had no row in {args.metadata}"
                  + (f" (did you mean --id-prefix {result['suggested_id_prefix']}?)"
                     if result.get("suggested_id_prefix") else ""))
    return 0 if result["stored"] or result["skipped_existing"] else 1


#: ECGs named per refusal reason; --json lists them all.
LIST_FAILED = 10


def failure_lines(result: dict, limit: int = LIST_FAILED) -> list[str]:
    """Per refusal reason: how many, one example message, and which ECGs (ids are the files'
    paths under the folders named, without extension): all of them, or the first `limit` and a
    count of the rest with the --json hint. Printed on the user's own terminal only."""
    lines, cut = [], False
    for reason, count in result["failure_reasons"].items():
        lines.append(f"  failed {count}: {reason} (e.g. {result['failure_examples'][reason]})")
        ids = result.get("failed_by_reason", {}).get(reason, [])
        shown = ids[:limit]
        if shown:
            rest = len(ids) - len(shown)
            cut |= rest > 0
            lines.append("    " + ", ".join(shown) + (f" and {rest} more" if rest else ""))
    if cut:
        lines.append("  (--json lists every failed ECG with its message)")
    return lines
