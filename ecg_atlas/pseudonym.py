"""Moved to :mod:`ecg_atlas.ingest.pseudonym` (issue 25). This name stays so that
``python -m ecg_atlas.pseudonym ID --patient-key-file KEY`` (the README's withdrawal recipe before
the move) and imports of it keep working; new code imports ``ecg_atlas.ingest.pseudonym``."""

from ecg_atlas.ingest.pseudonym import (
    ENV_KEY,
    MIN_KEY_BYTES,
    PREFIX,
    PatientPseudonymiser,
    load_pseudonymiser,
    main,
    pseudonym_in_file,
)

__all__ = ["ENV_KEY", "MIN_KEY_BYTES", "PREFIX", "PatientPseudonymiser", "load_pseudonymiser", "main",
           "pseudonym_in_file"]

if __name__ == "__main__":
    raise SystemExit(main())
