"""The fine-tuning loop (ecg_atlas.finetune.train) on the tiny ECG-FM network and real PTB-XL windows:
determinism, early stopping with the best weights kept, the minutes budget, the loss's masking
and class weights, record-level prediction, events without patient data, and its refusals."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from ecg_atlas.errors import AtlasError, TrainingDataError
from ecg_atlas.finetune.checkpoint import LAST
from ecg_atlas.finetune.objective import Loss
from ecg_atlas.finetune.train import TrainConfig, predict_records, train, val_auroc
from ecg_atlas.finetune.types import MULTICLASS, FinetuneData
from tests.finetune.engine_data import ptbxl_data, tiny_network

QUICK = dict(batch_size=4, lr=1e-3, device="cpu", log_every=1)


@pytest.fixture(scope="module")
def data() -> FinetuneData:
    return ptbxl_data(train=8, val=6)


def _weights(result) -> dict[str, torch.Tensor]:
    return {**{f"network.{k}": v for k, v in result.network.state_dict().items()},
            **{f"head.{k}": v for k, v in result.head.state_dict().items()}}


def _replace(data: FinetuneData, **changes) -> FinetuneData:
    fields = {k: getattr(data, k) for k in ("segments", "segment_record", "record_ids", "groups", "y", "task",
                                            "labels", "split", "digest")}
    return FinetuneData(**{**fields, **changes})


@pytest.mark.slow
def test_same_seed_gives_the_same_weights_and_the_best_ones_are_returned(data, tmp_path):
    """Dropouts on (the recipe's activation dropout 0.1): the seed fixes head init, sampler order
    and dropout masks. The returned weights are the best evaluation's, on disk too."""
    cfg = TrainConfig(epochs=2, seed=11, **QUICK)
    first = train(data, tiny_network(), cfg, tmp_path / "a")
    again = train(data, tiny_network(), cfg, tmp_path / "b")
    other = train(data, tiny_network(), TrainConfig(epochs=1, seed=12, **QUICK), tmp_path / "c")
    a, b, c = _weights(first), _weights(again), _weights(other)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["val_macro_auroc"] for r in first.history] == [r["val_macro_auroc"] for r in again.history]
    assert max(float((a[k] - c[k]).abs().max()) for k in a) > 1e-4

    scores = [row["val_macro_auroc"] for row in first.history]
    assert len(scores) == 2 and first.stopped == "epochs" and first.updates == 8
    assert first.best_val_macro_auroc == max(scores)
    assert first.best_epoch == scores.index(max(scores)) + 1
    probs = predict_records(first.network, first.head, data, "val", task=data.task, device="cpu")
    assert val_auroc(data, probs)[0] == pytest.approx(first.best_val_macro_auroc, abs=1e-9)
    state = torch.load(tmp_path / "a" / LAST, weights_only=True)
    assert all(torch.equal(state["best_network"][k], v) for k, v in first.network.state_dict().items())
    assert all(torch.equal(state["best_head"][k], v) for k, v in first.head.state_dict().items())
    assert state["progress"]["updates"] == 8


@pytest.mark.slow
def test_patience_stops_a_run_without_gain(data, tmp_path):
    """lr 0: the weights never move, so no evaluation beats the first; patience 1 stops at the second."""
    events = []
    result = train(data, tiny_network(), TrainConfig(epochs=10, patience=1, **{**QUICK, "lr": 0.0}), tmp_path,
                   on_event=events.append)
    assert result.stopped == "patience"
    assert [row["epoch"] for row in result.history] == [1, 2]
    assert result.history[0]["val_macro_auroc"] == result.history[1]["val_macro_auroc"]
    assert result.best_epoch == 1 and result.updates == 8
    assert [e["event"] for e in events if e["event"] in ("best", "stop")] == ["best", "stop"]
    assert events[-2] == {"event": "stop", "epoch": 2, "update": 8, "reason": "patience"}


@pytest.mark.slow
def test_minutes_budget_stops_and_still_evaluates(data, tmp_path):
    result = train(data, tiny_network(), TrainConfig(epochs=10_000, minutes=0.001, **QUICK), tmp_path)
    assert result.stopped == "minutes"
    assert result.updates < 10_000 * 4
    assert result.history and result.history[-1]["update"] == result.updates
    assert math.isfinite(result.best_val_macro_auroc)


@pytest.mark.slow
def test_events_are_json_numbers_without_patient_data(data, tmp_path):
    events = []
    train(data, tiny_network(), TrainConfig(epochs=2, eval_every=3, save_every=2, **QUICK), tmp_path,
          on_event=events.append)
    kinds = [e["event"] for e in events]
    assert kinds[0] == "start" and kinds[-2:] == ["stop", "done"]
    assert {"step", "epoch", "eval", "best", "checkpoint"} <= set(kinds)
    assert [e["update"] for e in events if e["event"] == "eval"] == [3, 6, 8]  # every 3 updates, and the last
    text = json.dumps(events, allow_nan=False)
    for private in [*data.record_ids, *map(str, data.groups), str(tmp_path), "ptbxl"]:
        assert private not in text
    start = events[0]
    assert start["updates_total"] == 8 and start["train_segments"] == 16 and start["class_weights"] == [1.0, 7.0]


def test_loss_masks_unknown_labels_and_weights_the_rare_class():
    data = ptbxl_data(train=8, val=6, unknown=((0, 0), (1, 1)))
    train_idx = data.segments_in("train")
    loss_fn = Loss(data, train_idx, torch.device("cpu"))
    y = data.y[data.segment_record[train_idx]]
    known = ~np.isnan(y)
    expected = [((y[:, j] == 0) & known[:, j]).sum() / ((y[:, j] == 1) & known[:, j]).sum() for j in range(2)]
    assert loss_fn.weights == pytest.approx(expected)
    at = torch.arange(len(train_idx))
    logits = torch.randn(len(train_idx), 2, requires_grad=True)
    loss = loss_fn(logits, at)
    loss.backward()
    unknown = torch.from_numpy(~known)
    assert unknown.any() and torch.all(logits.grad[unknown] == 0) and torch.all(logits.grad[~unknown] != 0)
    target = torch.from_numpy(np.nan_to_num(y))
    per = torch.nn.functional.binary_cross_entropy_with_logits(
        logits.detach(), target, pos_weight=torch.tensor(expected, dtype=torch.float32), reduction="none")
    assert float(loss.detach()) == pytest.approx(float((per * ~unknown).sum() / per.numel()), rel=1e-6)


def test_multiclass_loss_is_balanced_and_predictions_are_softmax():
    data = ptbxl_data(train=8, val=6, task=MULTICLASS)
    train_idx = data.segments_in("train")
    loss_fn = Loss(data, train_idx, torch.device("cpu"))
    classes = data.y[data.segment_record[train_idx], 0].astype(int)
    counts = np.bincount(classes, minlength=2)
    assert loss_fn.weights == pytest.approx(len(classes) / (2 * counts))
    network, head = tiny_network(), torch.nn.Linear(64, 2)
    probs = predict_records(network, head, data, "val", task=MULTICLASS, device="cpu")
    assert probs.shape == (6, 2) and np.allclose(probs.sum(axis=1), 1, atol=1e-5)


def test_predict_records_is_the_mean_of_segment_probabilities(data):
    network, head = tiny_network(), torch.nn.Linear(64, 2)
    probs = predict_records(network, head, data, "val", task=data.task, device="cpu", batch_size=5)
    assert network.training  # the caller's mode is left as it was
    network.eval()
    with torch.no_grad():
        for row, record in enumerate(data.records_in("val")):
            windows = torch.from_numpy(data.segments[data.segment_record == record])
            assert len(windows) == 2
            expected = head(network(windows)).sigmoid().mean(dim=0).numpy()
            np.testing.assert_allclose(probs[row], expected, atol=1e-6)


def test_refuses_an_empty_or_constant_validation_split(data, tmp_path):
    no_val = _replace(data, split=np.where(data.split == "val", "", data.split))
    with pytest.raises(TrainingDataError, match="val split has no ECG windows") as empty:
        train(no_val, tiny_network(), TrainConfig(**QUICK), tmp_path)
    assert empty.value.reason == "empty_split"
    constant = data.y.copy()
    constant[data.records_in("val")] = 1.0
    with pytest.raises(TrainingDataError, match="both positives and negatives") as flat:
        train(_replace(data, y=constant), tiny_network(), TrainConfig(**QUICK), tmp_path)
    assert flat.value.reason == "too_few_positives"
    with pytest.raises(AtlasError, match="batch_size must be at least 1"):
        train(data, tiny_network(), TrainConfig(**{**QUICK, "batch_size": 0}), tmp_path)


@pytest.mark.slow
def test_resume_refuses_other_settings_and_a_finished_run_stays_finished(data, tmp_path):
    done = train(data, tiny_network(), TrainConfig(epochs=1, **QUICK), tmp_path)
    with pytest.raises(AtlasError, match="--batch-size: saved 4, now 2"):
        train(data, tiny_network(), TrainConfig(epochs=1, **{**QUICK, "batch_size": 2}), tmp_path, resume=True)
    events = []
    again = train(data, tiny_network(), TrainConfig(epochs=1, **QUICK), tmp_path, resume=True, on_event=events.append)
    assert [e["event"] for e in events] == ["start", "stop", "done"] and events[0]["resumed"] is True
    assert again.updates == done.updates and again.history == done.history
    assert all(torch.equal(v, done.network.state_dict()[k]) for k, v in again.network.state_dict().items())
