"""`ecg-atlas embed --engine ray` over hospital exports: a patient id found in a file reaches the
shards, and a store importing them, only as the keyed pseudonym (the one `ecg-atlas ingest` makes
with the same key: both take it from `ingest.pseudonym.pseudonym_in_file`); never as itself, in no log
above DEBUG, with no file name logged."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ecg_atlas.bulk.ray_job import JobOptions, inputs_from_paths, read_and_prepare, run_job
from ecg_atlas.cli import main as cli_main
from ecg_atlas.embedder.resolver import load_encoder
from ecg_atlas.errors import AtlasError
from ecg_atlas.index import Store
from ecg_atlas.ingest.pseudonym import ENV_KEY, PatientPseudonymiser

KEY = b"ray-shards-pseudonym-test-key-0123456789"
#: Two exports that name their patient, and the id each names.
EXPORTS = {"muse/musephi_mac55_muse_ecg1.xml": "JAX01234", "dicom/ge_maclab_240hz_hemodynamic_sop.dcm": "123-654"}


def _ray_log_texts(ray_cluster) -> str:
    logs = Path(ray_cluster._private.worker._global_node.get_session_dir_path()) / "logs"
    return "\n".join(f.read_text(errors="replace") for f in logs.rglob("*") if f.is_file())


@pytest.mark.slow
def test_ray_shards_hold_the_pseudonym_ingest_stores_never_the_patient_id(
        ray_cluster, shared_data, tiny_checkpoint, tmp_path, capsys, caplog, monkeypatch):
    monkeypatch.delenv(ENV_KEY, raising=False)
    files = [shared_data / "formats" / name for name in EXPORTS]
    key_file = tmp_path / "patient.key"
    key_file.write_bytes(KEY)
    out = tmp_path / "shards"
    caplog.set_level(logging.INFO)
    assert cli_main(["embed", *map(str, files), "--engine", "ray", "--checkpoint", str(tiny_checkpoint), "--device",
                     "cpu", "--patient-key-file", str(key_file), "--out", str(out), "--json"]) == 0
    printed = capsys.readouterr()
    assert json.loads(printed.out)["embedded"] == 2

    rows = [row for shard in sorted(out.glob("shard-*.parquet")) for row in pq.read_table(shard).to_pylist()]
    shard_patients = {Path(r["source"]).name: r["patient_id"] for r in rows}
    pseudonymiser = PatientPseudonymiser(KEY)  # the key ingest is given makes the same ones
    assert shard_patients == {Path(name).name: pseudonymiser.pseudonym(raw) for name, raw in EXPORTS.items()}
    shard_text = json.dumps([{k: v for k, v in r.items() if "vector" not in k} for r in rows], default=str)
    for raw in EXPORTS.values():
        assert raw not in shard_text  # in no column: not patient_id, not metadata, not a message

    said = "\n".join([printed.out, printed.err, *(r.getMessage() for r in caplog.records if r.levelno > logging.DEBUG),
                      _ray_log_texts(ray_cluster)])
    for secret in [*EXPORTS.values(), KEY.decode(), *(Path(name).stem for name in EXPORTS)]:
        assert secret not in said  # no patient id, no key, no file name: driver, Ray and worker logs

    store_dir = tmp_path / "store"
    assert cli_main(["import", str(out), "--store", str(store_dir)]) == 0
    with Store.open(store_dir) as store:
        stored = store.get([r["ecg_id"] for r in rows], columns=["patient_id", "source"])
        assert {Path(s["source"]).name: s["patient_id"] for s in stored} == shard_patients
    assert b"JAX01234" not in (store_dir / "store.duckdb").read_bytes()

    # The job is tied to its key: resuming the folder with another key, or none, would mix schemes.
    inputs = inputs_from_paths(files)
    for other in (PatientPseudonymiser(b"another-key-of-at-least-16-bytes"), None):
        with pytest.raises(AtlasError, match="patient key"):
            run_job(inputs, out, JobOptions(checkpoint=str(tiny_checkpoint), pseudonymiser=other), progress=False)


def test_without_a_key_no_patient_id_is_taken_from_files(shared_data, tiny_checkpoint):
    """The read step itself (no cluster needed): the id in the file, pseudonymised only with a key."""
    files = [shared_data / "formats" / name for name in EXPORTS]
    batch = {"position": np.arange(2), "ecg_id": np.array(["a", "b"], object),
             "path": np.array([str(f) for f in files], object), "row": np.array([-1, -1])}
    prepare = load_encoder(str(tiny_checkpoint), device="cpu").preprocessing
    without = read_and_prepare(batch, prepare=prepare, min_leads=None)
    assert list(without["reason"]) == ["", ""] and list(without["file_patient"]) == ["", ""]
    keyed = read_and_prepare(batch, prepare=prepare, min_leads=None, pseudonymiser=PatientPseudonymiser(KEY))
    assert list(keyed["file_patient"]) == [PatientPseudonymiser(KEY).pseudonym(raw) for raw in EXPORTS.values()]
