"""How ecg-atlas-small-v2 and -v3 are made (embedder/bundled_recipe.py): which records train them, which choose,
which are never seen; and the release step that writes a fine-tuned encoder back into v1's layout."""

from __future__ import annotations

import csv

import numpy as np
import torch
from torch import nn

from ecg_atlas.embedder import load_encoder, preprocess, read_ecg, weights
from ecg_atlas.embedder.bundled_recipe import OTHER_GROUPS, SUPERCLASSES, release, write_manifest
from ecg_atlas.embedder.finetuned import save_finetuned
from ecg_atlas.embedder.pretrain.data import patient_split


def test_the_manifest_keeps_fold_9_and_the_held_out_patients_out_of_training(tmp_path, shared_data):
    out = tmp_path / "manifest.csv"
    counts = write_manifest(shared_data / "ptbxl", shared_data / "ecg", out)
    rows = list(csv.DictReader(open(out, newline="")))
    ptbxl = {r["record"]: r for r in csv.DictReader(open(shared_data / "ptbxl" / "manifest.csv", newline=""))}
    ecg = {r["record"]: r for r in csv.DictReader(open(shared_data / "ecg" / "manifest.csv", newline=""))}
    fold = {r: int(ptbxl[r]["strat_fold"]) for r in ptbxl}
    by_part = {p: [r for r in rows if r["part"] == p] for p in ("train", "val", "test")}
    assert {fold[r["record"]] for r in by_part["train"] if r["dataset"] == "ptbxl"} == set(range(1, 8))
    assert {fold[r["record"]] for r in by_part["val"]} == {8} and {fold[r["record"]] for r in by_part["test"]} == {9}
    sample = [r for r in rows if r["dataset"] != "ptbxl"]
    assert sample and all(r["part"] == "train" for r in sample)
    # no held-out patient of ../shared/data/ecg anywhere in the manifest; only labelled ECGs train
    assert all(patient_split(ecg[r["record"]]["patient_id"] or r["record"]) == "train" for r in sample)
    assert all(ecg[r["record"]]["label_groups"] for r in sample)
    # labels: PTB-XL's own columns; the sample's label groups with NSR counted as NORM
    nsr = [r for r in sample if "NSR" in ecg[r["record"]]["label_groups"].split(";")]
    assert nsr and all(r["NORM"] == "1" for r in nsr)
    assert all(r[c] == ptbxl[r["record"]][c] for r in rows if r["dataset"] == "ptbxl" for c in SUPERCLASSES)
    # v3's extra targets: the sample's other label groups, unknown (empty) for PTB-XL, which lacks them
    assert all(r[g] == "" for r in rows if r["dataset"] == "ptbxl" for g in OTHER_GROUPS)
    for g in OTHER_GROUPS:
        marked = {r["record"] for r in sample if r[g] == "1"}
        assert marked and marked == {r["record"] for r in sample if g in ecg[r["record"]]["label_groups"].split(";")}
        assert all(r[g] in ("0", "1") for r in sample)
    assert counts == {"train (ptbxl)": len(by_part["train"]) - len(sample), "train (ecg)": len(sample),
                      "val (ptbxl)": len(by_part["val"]), "test (ptbxl)": len(by_part["test"])}


def test_release_writes_the_finetuned_encoder_into_v1s_layout(tmp_path, ecg_dir):
    v1 = weights.RELEASES["v1"]
    base = load_encoder(v1.spec)
    network = base.trainable()
    with torch.no_grad():  # stands in for fine-tuning: every trainable weight moves
        for p in network.parameters():
            if p.requires_grad:
                p.add_(0.01 * torch.randn_like(p))
    head = nn.Linear(network.dim, len(SUPERCLASSES))
    model_pt = tmp_path / "model.pt"
    save_finetuned(model_pt, base=base, base_spec=v1.spec, network=network, head=head, task="multilabel",
                   labels=list(SUPERCLASSES), name="t", data_digest="d", recipe=network.recipe, metrics={})
    release(model_pt, weights.bundled_path(v1), tmp_path / "v2.pt", name="ecg-atlas-small-test")

    released = load_encoder(str(tmp_path / "v2.pt"))
    windows = preprocess(read_ecg(ecg_dir / "cinc_ptb" / "S0001.hea"))
    network.eval()
    with torch.no_grad():
        expected = network(torch.from_numpy(windows)).numpy()
    np.testing.assert_allclose(released.embed(windows), expected, atol=1e-5)
    assert np.abs(released.embed(windows) - base.embed(windows)).max() > 1e-3  # not v1's vectors
    payload = torch.load(tmp_path / "v2.pt", map_location="cpu", weights_only=True)
    original = torch.load(weights.bundled_path(v1), map_location="cpu", weights_only=True)
    assert not any(k.startswith("proj.") for k in payload["model"])  # the head is the user's, not shipped
    for key in ("quantizer.vars", "project_q.weight", "final_proj.weight", "mask_emb"):  # pretraining heads kept
        assert torch.equal(payload["model"][key], original["model"][key])
    assert payload["last_optimizer_state"] is None
    assert payload["extra_state"]["ecg_atlas_release"]["base"] == v1.name
