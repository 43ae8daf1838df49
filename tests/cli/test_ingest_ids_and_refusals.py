"""What a new user met in the first hour (issue: one clear house), each fixed and kept fixed."""

from __future__ import annotations

import json

import pytest

from tests.service.conftest import WRITE_TOKEN, cli, start_server


@pytest.mark.slow
def test_ids_stay_relative_to_the_folder_named_and_id_prefix_restores_the_manifests(tmp_path, tiny_checkpoint,
                                                                                  ecg_dir):
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs")
    try:
        common = ("--metadata", str(ecg_dir / "manifest.csv"), "--id-column", "record", "--server",
                  server.address, "--token", WRITE_TOKEN, "--json")
        plain = json.loads(cli("ingest", str(ecg_dir / "cinc_cpsc2018"), *common).stdout)
        assert plain["stored"] > 0 and plain["without_metadata"] == plain["found"]
        assert plain["suggested_id_prefix"] == "cinc_cpsc2018/"
        prefixed = json.loads(cli("ingest", str(ecg_dir / "cinc_cpsc2018"), "--id-prefix", "cinc_cpsc2018/",
                                  *common).stdout)
        assert prefixed["stored"] == plain["stored"] and prefixed["without_metadata"] == 0
        with server.client() as c:
            [bare], _ = c.get(["A0001"])
            [named], _ = c.get(["cinc_cpsc2018/A0001"])
        assert bare.metadata.get("label_groups") is None and named.metadata["label_groups"] == ["CD"]
    finally:
        server.stop()


@pytest.mark.slow
def test_refusals_keep_their_figures_and_reasons_travel_as_fields(tmp_path, tiny_checkpoint, ecg_dir):
    """A too-short ECG: the CLI summary groups by the reason code and keeps the figures."""
    import shutil

    import numpy as np

    from ecg_atlas.embedder import read_ecg

    short = tmp_path / "ecgs"
    short.mkdir()
    rec = read_ecg(ecg_dir / "cinc_cpsc2018" / "A0001")
    np.savez(short / "short.npz", signal=rec.signal[:, : int(3 * rec.fs)], fs=rec.fs,
             lead_names=np.array(rec.lead_names))
    shutil.copy(ecg_dir / "cinc_cpsc2018" / "A0001.hea", short)
    shutil.copy(ecg_dir / "cinc_cpsc2018" / "A0001.mat", short)
    server = start_server(tmp_path / "store", tiny_checkpoint, tmp_path / "logs")
    try:
        done = json.loads(cli("ingest", str(short), "--server", server.address, "--token", WRITE_TOKEN,
                              "--json").stdout)
        assert done["stored"] == 1 and done["failure_reasons"] == {"too_short": 1}
        assert "3.00 s" in done["failure_examples"]["too_short"]  # the figure, not just "too short"
        text = cli("ingest", str(short), "--replace", "--server", server.address, "--token", WRITE_TOKEN).stdout
        assert "failed 1: too_short (e.g. ECG is too short: 3.00 s" in text
        with server.client() as c:
            from ecg_atlas.client import IngestItem

            response = c.ingest([IngestItem("short", rec.signal[:, :1500], rec.fs, rec.lead_names)])
        [error] = response.errors
        assert error.reason == "too_short" and float(error.details["duration_s"]) == 3.0
        assert float(error.details["minimum_s"]) == 5.0
    finally:
        server.stop()


@pytest.mark.slow
def test_probe_baseline_with_the_default_encoder_needs_no_checkpoint(tmp_path, ecg_dir):
    server = start_server(tmp_path / "store", None, tmp_path / "logs")  # the bundled encoder
    try:
        cli("ingest", str(ecg_dir / "cinc_cpsc2018"), str(ecg_dir / "cinc_ptbxl"), "--server", server.address,
            "--token", WRITE_TOKEN)
    finally:
        server.stop()
    done = cli("probe", "train", "--store", str(tmp_path / "store"), "--name", "sex", "--target", "sex=F",
               "--baseline", "--bootstrap", "20", "--min-positives", "1", "--json")
    report = json.loads(done.stdout)
    assert report["baseline"]["model_id"].startswith("random") and "test" in report["baseline"]
    # piped, the long part (the random-init encoder over every ECG) is not silent: a line per stage
    stages = [line.split(" (")[0] for line in done.stderr.splitlines() if line.startswith("ecg-atlas probe train: ")]
    assert any(s.startswith("ecg-atlas probe train: embedding the ECGs with the random-init encoder") for s in stages)
    assert stages[-1] == "ecg-atlas probe train: trained 100%"
