"""Our port against outputs of the real fairseq-signals code (shared/data/parity, README tolerances)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from ecg_atlas.embedder import load_encoder
from ecg_atlas.embedder.checkpoint import FINETUNED, PRETRAINED, config_from_checkpoint, to_our_names
from ecg_atlas.embedder.model import ECGFM

TOL = 1e-5  # parity README: fp32 CPU, every array


def maxdiff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


@pytest.fixture(scope="module")
def inputs(parity_dir):
    return np.load(parity_dir / "inputs.npz")


@pytest.fixture(scope="module")
def pre_ref(parity_dir):
    return np.load(parity_dir / "tiny_pretrained_outputs.npz")


@pytest.fixture(scope="module")
def ft_ref(parity_dir):
    return np.load(parity_dir / "tiny_finetuned_outputs.npz")


@pytest.fixture(scope="module")
def pretrained(parity_dir):
    torch.set_num_threads(1)  # the reference outputs were computed with one thread
    return load_encoder(parity_dir / "tiny_pretrained.pt", device="cpu")


STAGES = ["feature_extractor_out", "features_ln", "post_extract_proj", "pos_conv_out",
          "encoder_input", "encoder_ln_out", "layer_0", "layer_1"]


def test_every_pretrained_stage_matches(pretrained, inputs, pre_ref):
    out = pretrained.forward(inputs["x"])
    with torch.inference_mode():
        stages = pretrained.model(torch.from_numpy(inputs["x"]), return_stages=True)
    for key in STAGES:
        assert maxdiff(stages[key], pre_ref[key]) <= TOL, key
    assert maxdiff(stages["features_ln"], pre_ref["features"]) <= TOL
    assert maxdiff(out["x"], pre_ref["encoder_out"]) <= TOL


def test_public_methods_match_reference(pretrained, inputs, pre_ref):
    encoded = pretrained.encode(inputs["x"])
    assert encoded.shape == (4, 156, 64) and encoded.dtype == np.float32
    assert maxdiff(encoded, pre_ref["encoder_out"]) <= TOL
    assert maxdiff(pretrained.embed(inputs["x"]), pre_ref["emb_ecgfm"]) <= TOL
    assert maxdiff(pretrained.embed(inputs["x"]), pre_ref["emb_mean"]) <= TOL
    assert maxdiff(pretrained.saliency(inputs["x"]), pre_ref["attn_max_last"]) <= TOL


def test_attention_maps_and_explicit_path(pretrained, inputs, pre_ref):
    out = pretrained.forward(inputs["x"], need_weights=True)
    assert out["attn"].shape == (4, 2, 156, 156)
    assert maxdiff(out["attn"], pre_ref["saliency"]) <= TOL
    assert maxdiff(out["x"], pre_ref["encoder_out_need_weights"]) <= TOL


def test_ten_second_input_gives_312_tokens(pretrained, inputs, pre_ref):
    encoded = pretrained.encode(inputs["x_long"])
    assert encoded.shape == (1, 312, 64)
    assert maxdiff(encoded, pre_ref["long_encoder_out"]) <= TOL
    assert maxdiff(pretrained.embed(inputs["x_long"]), pre_ref["long_emb_ecgfm"]) <= TOL


def test_torch_tensors_in_give_tensors_out(pretrained, inputs, pre_ref):
    emb = pretrained.embed(torch.from_numpy(inputs["x"]))
    assert isinstance(emb, torch.Tensor) and emb.device == pretrained.device
    assert maxdiff(emb.numpy(), pre_ref["emb_ecgfm"]) <= TOL


def test_legacy_weight_norm_spelling_gives_identical_outputs(parity_dir, pretrained, inputs):
    legacy = load_encoder(parity_dir / "tiny_pretrained_legacy_wn.pt")
    np.testing.assert_array_equal(legacy.encode(inputs["x"]), pretrained.encode(inputs["x"]))
    assert legacy.checkpoint_sha256 != pretrained.checkpoint_sha256


def test_finetuned_file_matches_every_output(parity_dir, inputs, ft_ref):
    enc = load_encoder(parity_dir / "tiny_finetuned.pt")
    assert enc.can_classify and len(enc.label_names) == 3
    assert maxdiff(enc.encode(inputs["x"]), ft_ref["encoder_out"]) <= TOL
    assert maxdiff(enc.embed(inputs["x"]), ft_ref["emb_ecgfm"]) <= TOL
    assert maxdiff(enc.classify(inputs["x"]), ft_ref["probs"]) <= TOL
    with torch.inference_mode():
        logits = enc.model.proj(torch.from_numpy(enc.embed(inputs["x"])))
    assert maxdiff(logits, ft_ref["logits"]) <= TOL
    out = enc.forward(inputs["x"], need_weights=True)
    assert maxdiff(out["attn"], ft_ref["saliency"]) <= TOL
    assert maxdiff(enc.saliency(inputs["x"]), ft_ref["attn_max_last"]) <= TOL


def test_identity_is_reported(pretrained, parity_dir):
    manifest = json.loads((parity_dir / "generation_manifest.json").read_text())
    assert pretrained.checkpoint_sha256 == manifest["sha256"]["tiny_pretrained.pt"]
    assert pretrained.dim == 64
    assert pretrained.model_id == "ecg-fm-pretrained-2x64"
    assert not pretrained.can_classify


@pytest.mark.parametrize("section,flavour,n_labels", [
    ("pretrained_wav2vec2_cmsc_base", PRETRAINED, 0),
    ("finetuned_ecg_transformer_classifier_base_17labels", FINETUNED, 17),
])
def test_full_size_architecture_has_the_reference_names_shapes_and_counts(parity_dir, section, flavour, n_labels):
    """Build the released architecture from the reference key list: same names, shapes, counts."""
    spec = json.loads((parity_dir / "full_config_state_dict_keys.json").read_text())[section]
    ref_shapes = {k: tuple(v) for k, v in spec["keys"].items()}
    fake = {k: torch.empty(s, device="meta") for k, s in ref_shapes.items()}
    state, ignored = to_our_names(fake, flavour)
    model_cfg = {"encoder_attention_heads": 12, "conv_feature_layers": "[(256, 2, 2)] * 4"}
    cfg = config_from_checkpoint(model_cfg, state)
    shape = (cfg.encoder_layers, cfg.embed_dim, cfg.ffn_dim, cfg.conv_dim, cfg.num_labels)
    assert shape == (12, 768, 3072, 256, n_labels)
    with torch.device("meta"):
        model = ECGFM(cfg)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == {k: tuple(v.shape) for k, v in state.items()}
    total_ref = sum(int(np.prod(s)) for s in ref_shapes.values())
    assert total_ref == spec["n_params"]
    ours_plus_ignored = sum(int(np.prod(s)) for s in ours.values()) + sum(int(np.prod(ref_shapes[k])) for k in ignored)
    assert ours_plus_ignored == spec["n_params"]
    if flavour == PRETRAINED:
        # spec §0: 90,374,016 once the pretraining heads are dropped, which still counts mask_emb (768)
        assert sum(int(np.prod(s)) for s in ours.values()) + 768 == 90_374_016
