"""Hospital exports through the real ingest path: a patient id found in a file reaches the store
only as its keyed pseudonym, and never as itself (issue: hospital ECG exports)."""

from __future__ import annotations

import json

import pytest

from ecg_atlas.ingest.pseudonym import ENV_KEY, PatientPseudonymiser
from tests.service.conftest import WRITE_TOKEN, cli, start_server

pytestmark = pytest.mark.slow  # a real server

KEY = b"k" * 32


@pytest.mark.parametrize("with_key", [True, False])
def test_a_file_patient_id_is_stored_only_as_its_pseudonym(shared_data, tiny_checkpoint, tmp_path, with_key):
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs")
    try:
        env = {ENV_KEY: KEY.decode()} if with_key else {ENV_KEY: ""}
        done = json.loads(cli("ingest", str(shared_data / "formats" / "muse"), "--server", server.address,
                              "--token", WRITE_TOKEN, "--json", env=env).stdout)
        assert done["stored"] == 3
        with server.client() as c:
            stored, _ = c.get(["musephi_mac55_muse_ecg1", "braveheart_example1"])
        muse, braveheart = stored
        assert muse.patient_id == (PatientPseudonymiser(KEY).pseudonym("JAX01234") if with_key else None)
        assert braveheart.patient_id is None  # the file names no patient
        assert (muse.metadata["age"], muse.metadata["sex"], muse.metadata["device"]) == (60, "M", "GE MAC55")
        assert "JAX" not in json.dumps(muse.metadata, default=str) and "TEST" not in json.dumps(muse.metadata,
                                                                                                default=str)
    finally:
        server.stop()
    assert b"JAX01234" not in (tmp_path / "store" / "store.duckdb").read_bytes()  # not anywhere in the store
