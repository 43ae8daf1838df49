"""Keyed patient pseudonyms: a patient id found in an ECG file becomes the store's patient key only
as HMAC-SHA-256 under a secret the operator holds.

The same id under the same key always gives the same pseudonym (same-patient exclusion and
withdrawal by patient keep working); without the key nobody can recompute it from a guessed id,
which a plain hash of a short hospital number would allow. Without a key no patient key is taken
from files at all.

To withdraw a patient known by their hospital id, the operator computes the key the store holds:

    python -m ecg_atlas.ingest.pseudonym JAX01234 --patient-key-file patient.key   # -> psn_...

(``python -m ecg_atlas.pseudonym``, its name before issue 25, still runs it.)
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import os
import sys
from pathlib import Path

from ecg_atlas.errors import AtlasError

ENV_KEY = "ECG_ATLAS_PATIENT_KEY"
#: Fewer bytes than this is a password, not a key: refuse it.
MIN_KEY_BYTES = 16
PREFIX = "psn_"
#: Domain separation: these pseudonyms never equal an HMAC the same key makes for anything else.
_CONTEXT = b"ecg-atlas patient id v1\x00"


class PatientPseudonymiser:
    """``pseudonym(patient_id)`` -> ``psn_`` + 32 hex digits (128 bits of HMAC-SHA-256)."""

    def __init__(self, key: bytes) -> None:
        if len(key) < MIN_KEY_BYTES:
            raise AtlasError(f"the patient pseudonym key is {len(key)} bytes; use at least {MIN_KEY_BYTES} "
                             f"random bytes (e.g. `openssl rand -hex 32 > patient.key`)")
        self._key = key

    def pseudonym(self, patient_id: str) -> str:
        normalised = patient_id.strip().encode("utf-8")
        if not normalised:
            raise ValueError("an empty patient id has no pseudonym")
        return PREFIX + hmac.new(self._key, _CONTEXT + normalised, hashlib.sha256).hexdigest()[:32]

    def key_fingerprint(self) -> str:
        """Tells keys apart without revealing them (an HMAC of a fixed text, never a pseudonym)."""
        return hmac.new(self._key, b"ecg-atlas key fingerprint v1", hashlib.sha256).hexdigest()[:32]

    def __repr__(self) -> str:  # never shows the key
        return "PatientPseudonymiser(key=<hidden>)"


def pseudonym_in_file(recording, pseudonymiser: PatientPseudonymiser | None) -> str | None:
    """The store's patient key for the patient id `recording`'s file names: its pseudonym, or None
    without a pseudonymiser or an id (every path from files to the store takes it from here)."""
    if pseudonymiser is None or not recording.patient_id_in_file:
        return None
    return pseudonymiser.pseudonym(recording.patient_id_in_file)


def load_pseudonymiser(key_file: Path | None = None) -> PatientPseudonymiser | None:
    """The operator's pseudonymiser from ``key_file`` or ``$ECG_ATLAS_PATIENT_KEY``; None without one."""
    if key_file is not None:
        try:
            key = Path(key_file).read_bytes().strip()
        except OSError as error:
            raise AtlasError(f"cannot read the patient key file {key_file}: {error.strerror}") from error
        return PatientPseudonymiser(key)
    from_env = os.environ.get(ENV_KEY, "").strip()
    return PatientPseudonymiser(from_env.encode("utf-8")) if from_env else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ecg_atlas.ingest.pseudonym",
                                     description="print the store's patient key for hospital patient ids")
    parser.add_argument("patient_ids", nargs="+")
    parser.add_argument("--patient-key-file", type=Path, default=None,
                        help=f"the key given to `ecg-atlas ingest` or `embed --engine ray` (default: ${ENV_KEY})")
    args = parser.parse_args(argv)
    try:
        pseudonymiser = load_pseudonymiser(args.patient_key_file)
    except AtlasError as error:
        print(error, file=sys.stderr)
        return 2
    if pseudonymiser is None:
        print(f"no key: pass --patient-key-file or set {ENV_KEY}", file=sys.stderr)
        return 2
    for patient_id in args.patient_ids:
        print(pseudonymiser.pseudonym(patient_id))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
