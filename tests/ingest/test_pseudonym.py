"""The operator's pseudonym command (ecg_atlas/ingest/pseudonym.py) under its name and under the
name the README gave it before issue 25 (``python -m ecg_atlas.pseudonym``)."""

from __future__ import annotations

import subprocess
import sys

from ecg_atlas.ingest.pseudonym import ENV_KEY, PatientPseudonymiser

KEY = b"operator-pseudonym-test-key-0123456789"


def test_the_withdrawal_command_runs_under_its_new_and_its_old_name(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_KEY, raising=False)
    key = tmp_path / "patient.key"
    key.write_bytes(KEY)
    printed = [subprocess.run([sys.executable, "-m", module, "JAX01234", "--patient-key-file", str(key)],
                              capture_output=True, text=True, check=True, timeout=60).stdout.split()
               for module in ("ecg_atlas.ingest.pseudonym", "ecg_atlas.pseudonym")]
    assert printed[0] == printed[1] == [PatientPseudonymiser(KEY).pseudonym("JAX01234")]
