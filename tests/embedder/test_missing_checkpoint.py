"""A checkpoint that is not there: the error says what to pass instead (issue 28: the README's first
examples named a file nobody has, and the error suggested neither `bundled` nor `hf:`)."""

from __future__ import annotations

import pytest

from ecg_atlas.cli import main
from ecg_atlas.embedder import load_encoder
from ecg_atlas.errors import CheckpointError


def _says_what_to_pass(message: str) -> None:
    assert "not found" in message
    assert "`bundled`" in message
    assert "hf:wanglab/ecg-fm/mimic_iv_ecg_physionet_pretrained.pt" in message
    assert "random:" in message


def test_load_encoder_names_bundled_and_hf(tmp_path):
    with pytest.raises(CheckpointError) as caught:
        load_encoder(tmp_path / "mimic_iv_ecg_physionet_pretrained.pt")
    _says_what_to_pass(str(caught.value))
    assert caught.value.reason == "bad_checkpoint"


def test_cli_embed_prints_the_choices(tmp_path, capsys, shared_data):
    ecg = shared_data / "ecg" / "cinc_cpsc2018" / "A0001.hea"
    code = main(["embed", str(ecg), "--checkpoint", str(tmp_path / "missing.pt"), "--out", str(tmp_path / "v.npz")])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("ecg-atlas embed: error: checkpoint file not found")
    _says_what_to_pass(err)
    assert not (tmp_path / "v.npz").exists()
