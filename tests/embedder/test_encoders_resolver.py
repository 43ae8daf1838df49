"""One resolver for every --checkpoint kind; one contract on every encoder; the CLI reports it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ecg_atlas.cli import main
from ecg_atlas.embedder import EncoderContract, load_encoder, random_encoder, read_ecg
from ecg_atlas.embedder.encoders.ecgfm import Encoder
from ecg_atlas.embedder.encoders.ecgfounder import ECGFounderEncoder
from ecg_atlas.embedder.encoders.hubert_ecg import HubertECGEncoder
from ecg_atlas.errors import AtlasError, CheckpointError

CONTRACT_FIELDS = {"name", "architecture", "leads", "fs", "segment_samples", "windowing", "filtering",
                   "normalisation", "preprocessing_version", "dim", "pooling", "weight_licence", "citation",
                   "licence_notice"}


@pytest.fixture(scope="module")
def encoders_dir(shared_data):
    return shared_data / "parity_encoders"


@pytest.fixture(scope="module")
def specs(parity_dir, encoders_dir):
    return {
        "ecg-fm": parity_dir / "tiny_pretrained.pt",
        "hubert-folder": encoders_dir / "hubert_ecg" / "tiny_hf",
        "hubert-pt": encoders_dir / "hubert_ecg" / "tiny_finetuned.pt",
        "ecgfounder": encoders_dir / "ecgfounder" / "tiny_12lead_ECGFounder.pth",
    }


KINDS = {"ecg-fm": Encoder, "hubert-folder": HubertECGEncoder, "hubert-pt": HubertECGEncoder,
         "ecgfounder": ECGFounderEncoder}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_the_kind_is_read_from_the_file_and_every_encoder_offers_the_same_interface(specs, ecg_dir, kind):
    enc = load_encoder(specs[kind])
    assert isinstance(enc, KINDS[kind])
    assert isinstance(enc.contract, EncoderContract) and CONTRACT_FIELDS <= set(enc.contract.to_dict())
    json.dumps(enc.describe())  # Info and embed --json carry it
    assert enc.model_id and len(enc.checkpoint_sha256) == 64 and enc.dim == enc.contract.dim
    windows = enc.preprocess(read_ecg(ecg_dir / "cinc_cpsc2018" / "A0001.hea"))
    assert windows.dtype == np.float32 and windows.shape[1:] == enc.contract.input_shape
    # the service's ecgfm-head probe reads ECG-FM's own head: only ECG-FM networks claim it
    assert enc.can_classify is False or isinstance(enc, Encoder)
    vectors = enc.embed(windows)
    assert vectors.shape == (len(windows), enc.dim) and np.isfinite(vectors).all()
    assert enc.encode(windows[:1]).shape[::2] == (1, enc.dim)
    assert enc.prepare(read_ecg(ecg_dir / "cinc_cpsc2018" / "A0001.hea")).report.preprocessing_version \
        == enc.contract.preprocessing_version
    twin = enc.random_twin(seed=3)
    assert twin.model_id.startswith("random-init-") and twin.checkpoint_sha256 == "none"
    assert twin.dim == enc.dim and twin.contract.preprocessing_version == enc.contract.preprocessing_version
    assert "UNTRAINED" in twin.notice and twin.embed(windows[:1]).shape == (1, enc.dim)


def test_bundled_loads_through_the_public_api():
    enc = load_encoder("bundled")  # issue 14: this used to fail
    assert enc.model_id == "ecg-atlas-small-v3" and enc.dim == 256
    assert enc.contract.name == "ecg-atlas-small-v3" and "bundled open encoder" in enc.notice


@pytest.mark.parametrize("spec, model_id, dim", [
    ("random:tiny", "random-init-tiny-seed0", 64),
    ("random:tiny:7", "random-init-tiny-seed7", 64),
    ("random:hubert-ecg-small:1", "random-init-hubert-ecg-small-seed1", 512),
    ("random:ecgfounder", "random-init-ecgfounder-released-seed0", 1024),
])
def test_random_presets_of_every_architecture(spec, model_id, dim):
    enc = load_encoder(spec)
    assert (enc.model_id, enc.dim, enc.checkpoint_sha256) == (model_id, dim, "none")
    assert "UNTRAINED" in enc.notice and "random init" in enc.contract.name


def test_random_seeds_are_reproducible_and_distinct():
    x = np.random.default_rng(0).standard_normal((1, 12, 2500)).astype(np.float32)
    np.testing.assert_array_equal(random_encoder("tiny", seed=2).embed(x), random_encoder("tiny", seed=2).embed(x))
    assert not np.allclose(random_encoder("tiny", seed=2).embed(x), random_encoder("tiny", seed=3).embed(x))


def test_bad_specs_say_what_is_accepted(tmp_path):
    with pytest.raises(AtlasError, match="hubert-ecg-small.*ecgfounder"):
        load_encoder("random:huge")
    with pytest.raises(AtlasError, match="integer seed"):
        load_encoder("random:tiny:abc")
    with pytest.raises(CheckpointError, match="not found"):
        load_encoder(tmp_path / "nope.pt")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no encoder.*HuBERT-ECG hub folder holds config.json"):
        load_encoder(tmp_path / "empty")


def test_a_device_outside_the_accepted_forms_is_refused_with_its_reason():
    from ecg_atlas.errors import DeviceError

    with pytest.raises(DeviceError, match="'auto', 'cpu', 'cuda' or 'cuda:N', got 'gpu'") as caught:
        load_encoder("random:tiny", device="gpu")  # torch.device("gpu") raised a bare RuntimeError
    assert caught.value.reason == "bad_device"


def test_folder_sha256_is_the_weights_file_and_is_checked(specs):
    import hashlib

    enc = load_encoder(specs["hubert-folder"])
    digest = hashlib.sha256((specs["hubert-folder"] / "model.safetensors").read_bytes()).hexdigest()
    assert enc.checkpoint_sha256 == digest
    assert load_encoder(specs["hubert-folder"], expected_sha256=digest).checkpoint_sha256 == digest
    with pytest.raises(CheckpointError, match="sha256"):
        load_encoder(specs["hubert-folder"], expected_sha256="0" * 64)


@pytest.mark.slow
def test_hf_repo_offline_says_how_to_pass_a_local_folder(tmp_path):
    code = ("from ecg_atlas.embedder import load_encoder\nfrom ecg_atlas.errors import CheckpointError\n"
            "try:\n    load_encoder('hf:Edoardo-BS/hubert-ecg-small')\n"
            "except CheckpointError as e:\n    print('ERR', e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("ERR"), out.stderr
    assert "Edoardo-BS/hubert-ecg-small" in out.stdout and "--checkpoint DIR" in out.stdout


@pytest.mark.parametrize("kind, name, notice", [("hubert-folder", "HuBERT-ECG", "NON-COMMERCIAL"),
                                                ("ecgfounder", "ECGFounder", "No licence is stated")])
def test_embed_cli_reports_the_contract_and_the_licence(specs, ecg_dir, tmp_path, capsys, kind, name, notice):
    records = [str(ecg_dir / "cinc_cpsc2018" / f"A000{i}.hea") for i in (1, 2, 3)]
    out = tmp_path / "v.npz"
    assert main(["embed", *records, "--checkpoint", str(specs[kind]), "--out", str(out),
                 "--device", "cpu", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["embedded"] == 3
    assert summary["contract"]["name"] == name and notice in summary["notice"]
    assert summary["contract"]["licence_notice"] in summary["notice"]
    enc = load_encoder(specs[kind])
    with np.load(out) as saved:
        assert json.loads(str(saved["contract"]))["preprocessing_version"] == enc.contract.preprocessing_version
        expected = enc.embed(enc.preprocess(read_ecg(ecg_dir / "cinc_cpsc2018" / "A0001.hea"))).mean(0)
        np.testing.assert_allclose(saved["record_vectors"][0], expected, atol=1e-5)
