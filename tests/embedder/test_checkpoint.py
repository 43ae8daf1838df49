"""Checkpoint loading: what a user gets for files that are not usable ECG-FM checkpoints."""

from __future__ import annotations

import collections
import os
import subprocess
import sys

import pytest
import torch

from ecg_atlas.embedder import load_encoder
from ecg_atlas.errors import CheckpointError


@pytest.fixture(scope="module")
def raw(parity_dir):
    return torch.load(parity_dir / "tiny_pretrained.pt", map_location="cpu", weights_only=True)


def save(tmp_path, obj, name="ckpt.pt"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def with_model(raw, model):
    return {**raw, "model": model}


def test_file_that_is_not_a_checkpoint(tmp_path):
    path = tmp_path / "notes.pt"
    path.write_text("this is a text file, not a checkpoint\n" * 10)
    with pytest.raises(CheckpointError, match="cannot be read as a torch checkpoint|could not be loaded"):
        load_encoder(path)


def test_torch_file_that_is_not_ecgfm(tmp_path):
    with pytest.raises(CheckpointError,
                       match="holds no encoder.*fairseq-signals ECG-FM checkpoint is a dict with 'cfg' and 'model'"):
        load_encoder(save(tmp_path, {"weights": torch.zeros(3)}))


def test_other_fairseq_model_is_refused(tmp_path, raw):
    other = {**raw, "cfg": {**raw["cfg"], "model": {**raw["cfg"]["model"], "_name": "transformer_lm"}}}
    with pytest.raises(CheckpointError, match="transformer_lm.*not an ECG-FM network"):
        load_encoder(save(tmp_path, other))


def test_truncated_file(tmp_path, parity_dir):
    data = (parity_dir / "tiny_pretrained.pt").read_bytes()
    path = tmp_path / "truncated.pt"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_encoder(path)


def test_mismatched_shape_names_the_key(tmp_path, raw):
    model = collections.OrderedDict(raw["model"])
    model["encoder.layers.1.fc1.weight"] = torch.zeros(100, 64)
    with pytest.raises(CheckpointError, match=r"shape mismatch for 'encoder\.layers\.1\.fc1\.weight'"):
        load_encoder(save(tmp_path, with_model(raw, model)))


def test_unknown_and_missing_keys_are_refused(tmp_path, raw):
    extra = collections.OrderedDict(raw["model"])
    extra["encoder.layers.0.self_attn.rel_pos_bias"] = torch.zeros(4)
    with pytest.raises(CheckpointError, match="unknown keys.*rel_pos_bias"):
        load_encoder(save(tmp_path, with_model(raw, extra), "extra.pt"))
    missing = collections.OrderedDict(raw["model"])
    del missing["encoder.layers.0.final_layer_norm.bias"]
    with pytest.raises(CheckpointError, match="missing keys.*final_layer_norm.bias"):
        load_encoder(save(tmp_path, with_model(raw, missing), "missing.pt"))


class NotAllowed:  # a pickled object outside torch's weights-only allow-list
    pass


def test_local_file_with_arbitrary_objects_is_not_unpickled(tmp_path, raw):
    with pytest.raises(CheckpointError, match="outside torch's safe weights-only set"):
        load_encoder(save(tmp_path, {**raw, "extra_state": NotAllowed()}))


def test_expected_sha256_is_checked(parity_dir):
    with pytest.raises(CheckpointError, match="sha256"):
        load_encoder(parity_dir / "tiny_pretrained.pt", expected_sha256="0" * 64)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_encoder(tmp_path / "nope.pt")


def test_optimizer_state_is_not_kept(parity_dir):
    enc = load_encoder(parity_dir / "tiny_pretrained.pt")
    assert not hasattr(enc, "last_optimizer_state")
    names = {name for name, _ in enc.model.named_parameters()}
    assert not any("quantizer" in n or "mask_emb" in n or "project_q" in n for n in names)


@pytest.mark.slow
def test_hf_name_offline_says_how_to_pass_a_local_file(tmp_path):
    """Run in a subprocess so that HF_HUB_OFFLINE is read by huggingface_hub at import."""
    code = (
        "from ecg_atlas.embedder import load_encoder\n"
        "from ecg_atlas.errors import CheckpointError\n"
        "try:\n"
        "    load_encoder('hf:wanglab/ecg-fm/mimic_iv_ecg_physionet_pretrained.pt')\n"
        "except CheckpointError as e:\n"
        "    print('ERR', e)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.stdout.startswith("ERR"), out.stderr
    assert "wanglab/ecg-fm" in out.stdout
    assert "pass its local path" in out.stdout and "--checkpoint" in out.stdout


def test_hf_name_must_name_a_file():
    with pytest.raises(CheckpointError, match="hf:OWNER/REPO/FILE"):
        load_encoder("hf:wanglab")
