"""A real server running HuBERT-ECG- and ECGFounder-kind tiny models end to end: ingest through the
CLI, search, a probe, Info's contract and the licence notice (issue: more than one foundation model)."""

from __future__ import annotations

import json

import pytest

from .conftest import WRITE_TOKEN, cli, start_server

pytestmark = pytest.mark.slow  # a real server

MODELS = {
    "hubert": ("parity_encoders/hubert_ecg/tiny_hf", "HuBERT-ECG", "non-commercial"),
    "ecgfounder": ("parity_encoders/ecgfounder/tiny_12lead_ECGFounder.pth", "ECGFounder", "licence"),
}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_a_server_runs_another_encoder_end_to_end(kind, shared_data, ecg_dir, tmp_path):
    path, name, notice_word = MODELS[kind]
    server = start_server(tmp_path / "store", shared_data / path, tmp_path / "logs")
    try:
        ingest = json.loads(cli("ingest", str(ecg_dir / "cinc_cpsc2018"), str(ecg_dir / "cinc_ptbxl"),
                                "--server", server.address, "--token", WRITE_TOKEN, "--json").stdout)
        assert ingest["stored"] >= 20 and ingest["failed"] == 0
        with server.client() as c:
            info = c.info()
            contract = json.loads(info["encoder_contract_json"])
            assert contract["name"] == name and info["dim"] == contract["dim"]
            assert info["preprocessing_version"] == contract["preprocessing_version"] != "ecgfm-v1"
            assert notice_word in info["encoder_notice"].lower()  # the weight licence is announced
            hits = c.search(ecg_id="A0001", k=3).hits
            assert hits[0].ecg_id == "A0001" and hits[0].score == pytest.approx(1.0, abs=1e-4)
            report = c.train_probe(f"{kind}_sex", "sex=F", n_bootstrap=20, min_positives=1, baseline=True,
                                   timeout=300)
            assert report.kind == "binary" and 0.0 <= report.macro_auroc["value"] <= 1.0
            assert report.report["baseline"]["model_id"].startswith("random")  # its random-init twin
        assert notice_word in server.log().lower()  # ...and said at start-up
    finally:
        server.stop()
