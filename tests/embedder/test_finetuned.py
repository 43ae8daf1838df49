"""Fine-tuning, embedder side: trainable copies of every encoder family, and model.pt round trips.

Real files: the tiny parity checkpoints of each family (ECG-FM, HuBERT-ECG hub folder and training
file, ECGFounder), the bundled encoder and random: presets, on real ECG windows from ../shared/data/ecg.
The tests over every family's files are ``slow`` (each loads and runs a network a few times).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ecg_atlas.embedder import load_encoder, read_ecg
from ecg_atlas.embedder.finetune_net import RECIPE_FIELDS, TrainableNetwork
from ecg_atlas.embedder.finetuned import FORMAT, read_meta, save_finetuned
from ecg_atlas.errors import AtlasError, CheckpointError

RECORDS = ("cinc_cpsc2018/A0001", "cinc_cpsc2018/A0002")
ECGFM_TINY = "parity/tiny_pretrained.pt"
HUBERT_HF = "parity_encoders/hubert_ecg/tiny_hf"
HUBERT_FINETUNED = "parity_encoders/hubert_ecg/tiny_finetuned.pt"
ECGFOUNDER_TINY = "parity_encoders/ecgfounder/tiny_12lead_ECGFounder.pth"
#: one tiny file per family: the round trips
FAMILY_FILES = {"ECG-FM": ECGFM_TINY, "HuBERT-ECG": HUBERT_HF, "ECGFounder": ECGFOUNDER_TINY}


def _spec(shared_data, name: str) -> str:
    return name if ":" in name or name == "bundled" else str(shared_data / name)


def _windows(encoder, ecg_dir, n: int = 4) -> np.ndarray:
    x = np.concatenate([encoder.preprocess(read_ecg(ecg_dir / f"{record}.hea")) for record in RECORDS])
    assert len(x) >= 2
    return x[:n]


@pytest.mark.slow  # every family's file, transformers imported: seconds each
@pytest.mark.parametrize("name", [ECGFM_TINY, "bundled", "random:tiny", HUBERT_HF, HUBERT_FINETUNED, ECGFOUNDER_TINY])
def test_trainable_in_eval_mode_pools_as_the_encoder_embeds(shared_data, ecg_dir, name):
    encoder = load_encoder(_spec(shared_data, name))
    x = _windows(encoder, ecg_dir)
    net = encoder.trainable()
    assert isinstance(net, TrainableNetwork) and net.training and net.dim == encoder.dim
    assert all(p.dtype == torch.float32 and p.device.type == "cpu" for p in net.parameters())
    net.eval()
    with torch.no_grad():
        pooled = net(torch.from_numpy(x)).numpy()
    assert pooled.shape == (len(x), encoder.dim)
    np.testing.assert_allclose(pooled, encoder.embed(x), atol=1e-5, rtol=0)


def test_trainable_is_a_new_module_with_the_published_weights_not_the_inference_ones(shared_data, ecg_dir):
    """bf16 inference folds and casts its weights: the trainable copy is rebuilt from the file, in float32."""
    spec = _spec(shared_data, ECGFM_TINY)
    float32, bf16 = load_encoder(spec, dtype="float32"), load_encoder(spec, dtype="bfloat16")
    net = bf16.trainable().eval()
    assert net.network.conv_pos.weight_v.requires_grad  # the weight-norm pair, unfolded and trainable
    x = _windows(float32, ecg_dir)
    with torch.no_grad():
        np.testing.assert_allclose(net(torch.from_numpy(x)).numpy(), float32.embed(x), atol=1e-5, rtol=0)
        next(iter(net.network.encoder.layers[0].parameters())).add_(1.0)  # the copy is the trainer's alone
    np.testing.assert_array_equal(float32.embed(x), float32.embed(x))
    assert not any(p.data_ptr() == q.data_ptr() for p in net.parameters() for q in float32.model.parameters())


def test_ecgfm_recipe_freezes_the_conv_extractor_and_drops_out_only_in_training(shared_data, ecg_dir):
    encoder = load_encoder(_spec(shared_data, ECGFM_TINY))
    net = encoder.trainable()
    x = torch.from_numpy(_windows(encoder, ecg_dir))
    net(x).sum().backward()
    extractor = list(net.network.feature_extractor.parameters())
    assert extractor and all(not p.requires_grad and p.grad is None for p in extractor)
    trainable = [p for p in net.parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for p in trainable)
    assert {id(p) for g in net.param_groups(1e-5, 0.0) for p in g["params"]} == {id(p) for p in trainable}
    torch.manual_seed(0)
    with torch.no_grad():
        first, second = net(x), net(x)  # activation dropout 0.1 on: two passes differ
        assert (first - second).abs().max() > 1e-6
        net.eval()
        np.testing.assert_array_equal(net(x).numpy(), net(x).numpy())
    assert net.recipe["activation_dropout"] == 0.1 and net.recipe["dropout"] == 0.0


@pytest.mark.slow  # every family's file, transformers imported: seconds each
@pytest.mark.parametrize("name, family, optimizer", [
    (ECGFM_TINY, "ECG-FM", torch.optim.Adam), (HUBERT_HF, "HuBERT-ECG", torch.optim.AdamW),
    (ECGFOUNDER_TINY, "ECGFounder", torch.optim.Adam)])
def test_each_family_states_its_published_recipe(shared_data, name, family, optimizer):
    net = load_encoder(_spec(shared_data, name)).trainable()
    assert net.family == family and all(field in net.recipe for field in RECIPE_FIELDS)
    assert "github.com" in net.recipe["source"] or "ecgfm_spec.md" in net.recipe["source"]
    head = torch.nn.Linear(net.dim, 2)
    opt = net.optimizer(net.param_groups(net.recipe["lr"], net.recipe["weight_decay"])
                        + [{"params": list(head.parameters()), "lr": net.recipe["lr"], "weight_decay": 0.0}])
    assert type(opt) is optimizer and opt.param_groups[0]["betas"] == tuple(net.recipe["betas"])
    assert net.scheduler(opt, total_updates=10) is not None
    frozen = [n for n, p in net.named_parameters() if not p.requires_grad]
    assert bool(frozen) == (family != "ECGFounder")  # ECGFounder trains every weight


def _fine_tune(base, ecg_dir, n_outputs: int, steps: int = 2):
    """A couple of real optimizer steps, so the saved weights differ from the base's."""
    x = _windows(base, ecg_dir)
    net = base.trainable()
    torch.manual_seed(0)
    head = torch.nn.Linear(net.dim, n_outputs)
    opt = net.optimizer(net.param_groups(1e-3, 0.0) + [{"params": list(head.parameters()), "lr": 1e-3,
                                                        "weight_decay": 0.0}])
    for _ in range(steps):
        loss = head(net(torch.from_numpy(x))).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        pooled = net(torch.from_numpy(x))
        logits = head(pooled)
    return x, net, head, pooled.numpy(), logits


@pytest.mark.slow  # every family's file, transformers imported: seconds each
@pytest.mark.parametrize("family", list(FAMILY_FILES))
def test_model_pt_round_trip_through_load_encoder(shared_data, ecg_dir, tmp_path, family):
    spec = _spec(shared_data, FAMILY_FILES[family])
    base = load_encoder(spec)
    x, net, head, pooled, logits = _fine_tune(base, ecg_dir, n_outputs=3)
    labels = ["NORM", "MI", "STTC"]
    metrics = {"val": {"macro": {"auroc": {"value": 0.7}}}, "test": None}
    sha = save_finetuned(tmp_path / "model.pt", base=base, base_spec=spec, network=net, head=head,
                         task="multilabel", labels=labels, name="ptbxl-super", data_digest="ab" * 32,
                         recipe=net.recipe, metrics=metrics)
    assert not list(tmp_path.glob("*.tmp"))
    raw = torch.load(tmp_path / "model.pt", weights_only=True)  # plain tensors and values only
    assert raw["format"] == FORMAT

    tuned = load_encoder(tmp_path / "model.pt")
    assert tuned.model_id == "finetuned-ptbxl-super" and tuned.checkpoint_sha256 == sha
    assert tuned.label_names == tuple(labels) and tuned.can_classify
    assert tuned.contract.name == f"{base.contract.name}, fine-tuned (ptbxl-super)"
    assert tuned.contract.preprocessing_version == base.contract.preprocessing_version
    assert tuned.contract.input_shape == base.contract.input_shape
    np.testing.assert_allclose(tuned.embed(x), pooled, atol=1e-5, rtol=0)
    np.testing.assert_allclose(tuned.classify(x), torch.sigmoid(logits).numpy(), atol=1e-5, rtol=0)
    assert np.abs(tuned.embed(x) - base.embed(x)).max() > 1e-4  # the fine-tuned weights, not the base's
    meta = tuned.describe()["finetuned"]
    assert meta == tuned.finetuned == read_meta(tmp_path / "model.pt")
    assert meta["base"]["family"] == family and meta["base"]["sha256"] == base.checkpoint_sha256
    assert meta["base"]["spec"] == spec and meta["data_digest"] == "ab" * 32 and meta["metrics"] == metrics
    assert meta["labels"] == labels and meta["task"] == "multilabel" and meta["recipe"]["family"] == family
    again = tuned.trainable().eval()  # fine-tuning goes on from the file
    with torch.no_grad():
        np.testing.assert_allclose(again(torch.from_numpy(x)).numpy(), pooled, atol=1e-5, rtol=0)


def test_a_multiclass_head_answers_softmax(shared_data, ecg_dir, tmp_path):
    spec = _spec(shared_data, "random:tiny")
    base = load_encoder(spec)
    x, net, head, _, logits = _fine_tune(base, ecg_dir, n_outputs=3, steps=1)
    save_finetuned(tmp_path / "model.pt", base=base, base_spec=spec, network=net, head=head, task="multiclass",
                   labels=["sinus", "af", "other"], name="rhythm", data_digest="0" * 64, recipe=net.recipe, metrics={})
    tuned = load_encoder(tmp_path / "model.pt")
    probs = tuned.classify(x)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(probs, torch.softmax(logits, dim=1).numpy(), atol=1e-5, rtol=0)
    assert not load_encoder(spec).can_classify  # the base has no head to serve


def test_saving_refuses_what_cannot_be_read_back(shared_data, ecg_dir, tmp_path):
    base = load_encoder("random:tiny")
    net = base.trainable()
    kwargs = dict(base=base, base_spec="random:tiny", network=net, data_digest="0", recipe=net.recipe, metrics={})
    with pytest.raises(AtlasError, match="2 outputs but 3 labels"):
        save_finetuned(tmp_path / "a.pt", head=torch.nn.Linear(net.dim, 2), task="multilabel",
                       labels=["a", "b", "c"], name="x", **kwargs)
    with pytest.raises(AtlasError, match="task must be one of"):
        save_finetuned(tmp_path / "a.pt", head=torch.nn.Linear(net.dim, 1), task="regression", labels=["a"],
                       name="x", **kwargs)
    with pytest.raises(AtlasError, match="name"):
        save_finetuned(tmp_path / "a.pt", head=torch.nn.Linear(net.dim, 1), task="binary", labels=["a"],
                       name="../escape", **kwargs)
    assert not list(tmp_path.iterdir())


def test_files_that_are_not_a_fitting_encoder_are_refused(shared_data, ecg_dir, tmp_path):
    torch.save({"numbers": torch.zeros(3)}, tmp_path / "not_an_encoder.pt")
    with pytest.raises(CheckpointError, match="holds no encoder ECG Atlas reads.*fine-tuned model.pt"):
        load_encoder(tmp_path / "not_an_encoder.pt")

    base = load_encoder("random:tiny")
    net = base.trainable()
    save_finetuned(tmp_path / "model.pt", base=base, base_spec="random:tiny", network=net,
                   head=torch.nn.Linear(net.dim, 2), task="binary", labels=["a", "b"], name="ok",
                   data_digest="0", recipe=net.recipe, metrics={})
    good = torch.load(tmp_path / "model.pt", weights_only=True)

    edited = dict(good, weights={**good["weights"], "model": dict(good["weights"]["model"])})
    edited["weights"]["model"]["encoder.encoder.layers.0.fc1.weight"] = torch.zeros(7, 64)  # a wrong shape
    torch.save(edited, tmp_path / "wrong_shape.pt")
    with pytest.raises(CheckpointError, match="do not fit the base architecture ECG-FM.*fc1"):
        load_encoder(tmp_path / "wrong_shape.pt")

    moved = dict(good, meta={**good["meta"], "base": {**good["meta"]["base"], "family": "HuBERT-ECG"}})
    torch.save(moved, tmp_path / "wrong_family.pt")
    with pytest.raises(CheckpointError, match="not in the HuBERT-ECG layout"):
        load_encoder(tmp_path / "wrong_family.pt")

    relabelled = dict(good, meta={**good["meta"], "labels": ["a", "b", "c"]})
    torch.save(relabelled, tmp_path / "wrong_labels.pt")
    with pytest.raises(CheckpointError, match="head of 2 outputs but its metadata names 3 labels"):
        load_encoder(tmp_path / "wrong_labels.pt")

    torch.save(dict(good, format="ecg-atlas-finetuned/9"), tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="format 'ecg-atlas-finetuned/9'"):
        load_encoder(tmp_path / "future.pt")


def test_trainable_refuses_a_file_replaced_since_it_was_loaded(shared_data, tmp_path):
    base = load_encoder("random:tiny")
    net = base.trainable()
    path = tmp_path / "model.pt"
    save_finetuned(path, base=base, base_spec="random:tiny", network=net, head=torch.nn.Linear(net.dim, 1),
                   task="binary", labels=["a"], name="first", data_digest="0", recipe=net.recipe, metrics={})
    tuned = load_encoder(path)
    save_finetuned(path, base=base, base_spec="random:tiny", network=net, head=torch.nn.Linear(net.dim, 1),
                   task="binary", labels=["a"], name="second", data_digest="0", recipe=net.recipe, metrics={})
    with pytest.raises(CheckpointError, match="sha256"):
        tuned.trainable()
