"""A fine-tuned model.pt served by the real service: Predict ``head``, Explain, Info, ListProbes, and
the store identity rule. A real `ecg-atlas serve` on loopback over a real store, real ECGs."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
import torch

from ecg_atlas.analysis.metrics import evaluate
from ecg_atlas.client import IngestItem
from ecg_atlas.embedder import load_encoder, read_ecg
from ecg_atlas.embedder.finetuned import save_finetuned
from ecg_atlas.index import EncoderIdentity, Store
from tests.service.conftest import READ_TOKEN, start_server

RECORDS = ("cinc_cpsc2018/A0001", "cinc_cpsc2018/A0002", "cinc_ptbxl/HR00001")
LABELS = ["NORM", "CD"]


@pytest.fixture(scope="module")
def model_pt(tmp_path_factory, tiny_checkpoint, ecg_dir):
    """A tiny ECG-FM fine-tuned for two optimizer steps on real windows, saved as model.pt."""
    base = load_encoder(tiny_checkpoint)
    x = torch.from_numpy(np.concatenate([base.preprocess(read_ecg(ecg_dir / f"{r}.hea")) for r in RECORDS]))
    net = base.trainable()
    torch.manual_seed(0)
    head = torch.nn.Linear(net.dim, len(LABELS))
    opt = net.optimizer(net.param_groups(1e-3, 0.0) + [{"params": list(head.parameters()), "lr": 1e-3,
                                                        "weight_decay": 0.0}])
    for _ in range(2):
        loss = head(net(x)).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    y = np.array([[1, 0], [0, 1], [1, 0], [0, 1]], dtype=float)
    val = evaluate(y, np.array([[0.9, 0.2], [0.3, 0.7], [0.6, 0.4], [0.1, 0.8]]), LABELS, np.arange(4),
                   n_resamples=20)
    metrics = {"val": val.to_dict(), "test": None, "baselines": {}, "verdict": "a two-step toy: no verdict"}
    path = tmp_path_factory.mktemp("finetuned") / "model.pt"
    save_finetuned(path, base=base, base_spec=str(tiny_checkpoint), network=net, head=head, task="multilabel",
                   labels=LABELS, name="svc-tiny", data_digest="cd" * 32, recipe=net.recipe, metrics=metrics)
    return path, metrics


@pytest.mark.slow
def test_a_served_model_pt_predicts_explains_and_shows_its_head(tmp_path, model_pt, ecg_dir):
    path, metrics = model_pt
    encoder = load_encoder(path)
    server = start_server(tmp_path / "store", path, tmp_path / "logs")
    try:
        with server.client() as c:
            recordings = {r: read_ecg(ecg_dir / f"{r}.hea") for r in RECORDS}
            summary = c.ingest(IngestItem.from_recording(r, rec, patient_id=f"p{i}")
                               for i, (r, rec) in enumerate(recordings.items()))
            assert summary.stored == len(RECORDS), summary
        with server.client(token=READ_TOKEN) as c:
            sent = recordings[RECORDS[0]]
            out = c.predict("head", list(RECORDS), signals=[sent.signal], fs=sent.fs, lead_names=sent.lead_names)
            assert out.labels == LABELS and out.keys == [*RECORDS, "ecg:0"]
            assert out.probabilities.shape == (len(RECORDS) + 1, len(LABELS))
            # record-level: the mean over the record's windows of the head's probabilities
            expected = np.stack([encoder.classify(encoder.preprocess(recordings[r])).mean(axis=0) for r in RECORDS])
            np.testing.assert_allclose(out.probabilities[:len(RECORDS)], expected, atol=1e-4)
            np.testing.assert_allclose(out.probabilities[-1], expected[0], atol=1e-4)
            alias = c.predict("ecgfm-head", list(RECORDS))
            np.testing.assert_array_equal(alias.probabilities, out.probabilities[:len(RECORDS)])

            explained = c.explain(RECORDS[0], png=True)
            assert explained.png is not None and explained.png.startswith(b"\x89PNG\r\n\x1a\n")
            assert explained.model_id == "finetuned-svc-tiny"
            assert explained.saliency.min() == pytest.approx(0.0) and explained.saliency.max() == pytest.approx(1.0)

            info = c.info()
            assert info["model_id"] == "finetuned-svc-tiny" and info["checkpoint_sha256"] == encoder.checkpoint_sha256
            assert info["finetuned"]["name"] == "svc-tiny" and info["finetuned"]["labels"] == LABELS
            assert info["finetuned"]["base"]["family"] == "ECG-FM"
            assert info["finetuned"]["metrics"]["val"] == metrics["val"]

            probes = c.list_probes()
            served = probes[0]
            assert (served["name"], served["kind"], served["labels"]) == ("head", "fine-tuned", LABELS)
            assert served["model_id"] == "finetuned-svc-tiny"
            assert served["macro_auroc"] == pytest.approx(metrics["val"]["macro"]["auroc"]["value"])
            assert served["report"]["metrics"]["val"] == metrics["val"]
            assert served["report"]["finetuned"]["data_digest"] == "cd" * 32
    finally:
        server.stop()


@pytest.mark.slow
def test_a_store_of_the_base_encoder_refuses_the_fine_tuned_one(tmp_path, model_pt, tiny_checkpoint):
    base = load_encoder(tiny_checkpoint)
    identity = EncoderIdentity(base.model_id, base.checkpoint_sha256, base.contract.preprocessing_version, base.dim)
    with Store.open(tmp_path / "store", identity=identity):
        pass  # a store made for the base encoder
    server = start_server(tmp_path / "store", model_pt[0], tmp_path / "logs", wait=False)
    assert server.process.wait(timeout=120) != 0
    log = server.log()
    assert "refusing vectors from" in log and "finetuned-svc-tiny" in log and base.model_id in log


@pytest.mark.slow
def test_head_on_a_server_without_one_is_a_failed_precondition(corpus_server):
    with corpus_server.client(token=READ_TOKEN) as c:
        stored = [hit.ecg_id for hit in c.search(vector=np.ones(c.info()["dim"], dtype=np.float32), k=1).hits]
        with pytest.raises(grpc.RpcError) as e:
            c.predict("head", stored)
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "no classifier head" in e.value.details() and "model.pt" in e.value.details()
