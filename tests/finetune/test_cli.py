"""`ecg-atlas finetune` end to end: the real command on real PTB-XL files, and on a real server's store.

Tiny ECG-FM (the parity checkpoint), a few dozen records, one epoch: what is checked is the
plumbing and the honesty of what is written (report.json consistent with model.pt and the data,
the model card, the events, the summary), not the skill of a one-epoch model.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from ecg_atlas.embedder import load_encoder
from ecg_atlas.finetune.sources import Selection, from_store
from tests.finetune.ptbxl_subset import write_subset
from tests.service.conftest import WRITE_TOKEN, cli, cli_json, start_server

FILES_PARTS = {"train": ((1, 2), 24, 8), "val": ((9,), 12, 5), "test": ((8,), 8, 3)}
STORE_PARTS = {"train": ((1, 2), 16, 6), "val": ((9,), 10, 4)}
QUICK = ("--epochs", "1", "--batch-size", "16", "--min-positives", "3", "--bootstrap", "100", "--device", "cpu")


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_run(out, summary: dict, *, task: str, labels: list[str], parts: list[str], base_sha: str) -> dict:
    """What every run directory must hold, consistent across report.json, model.pt and the summary."""
    report = json.loads((out / "report.json").read_text())
    assert summary["verdict"] == report["verdict"] and summary["files"]["model"] == str(out / "model.pt")
    assert report["task"] == task and report["labels"] == labels
    assert report["base"]["sha256"] == base_sha
    assert report["model_sha256"] == sha256(out / "model.pt")
    assert report["training"]["epochs_run"] == 1 and report["training"]["stopped"] == "epochs"
    assert report["training"]["segments_per_s"] > 0 and report["run"]["processes"] == 1
    evaluation = report["evaluation"]
    assert [p for p in ("val", "test") if evaluation[p] is not None] == parts
    for part in parts:
        for model in ("frozen_probe", "random_init"):
            assert evaluation["baselines"][model][part]["macro"]["auroc"]["ci_low"] is not None
        for entry in evaluation[part]["labels"]:  # the metrics count what the data holds
            assert [entry["n_positive"], entry["n_negative"]] == report["data"]["label_counts"][entry["label"]][part]
    assert report["verdict"].startswith(("fine-tuning beats", "fine-tuning does not beat"))
    # the model is an encoder every --checkpoint reads, and it names its data and metrics
    model = load_encoder(out / "model.pt")
    assert model.model_id == f"finetuned-{report['name']}" and list(model.label_names) == labels
    assert model.checkpoint_sha256 == report["model_sha256"]
    assert model.finetuned["data_digest"] == report["data"]["digest"]
    assert model.finetuned["metrics"]["verdict"] == report["verdict"]
    assert model.finetuned["base"]["sha256"] == base_sha
    card = (out / "MODEL_CARD.md").read_text()
    for heading in ("## Intended use", "## Data", "## Recipe", "## Metrics", "## Limitations", "## Licences"):
        assert heading in card
    assert report["verdict"] in card and report["data"]["digest"] in card
    events = [json.loads(line)["event"] for line in (out / "events.jsonl").read_text().splitlines()]
    assert events[0] == "start" and {"epoch", "eval", "done", "written"} <= set(events)
    return report


@pytest.mark.slow
def test_finetune_from_files_multilabel_with_test_split(tmp_path, tiny_checkpoint):
    data_dir, manifest, chosen = write_subset(tmp_path, FILES_PARTS)
    out = tmp_path / "run"
    done = cli("finetune", str(data_dir), "--manifest", str(manifest), "--id-column", "record",
               "--target", "MI,STTC", "--train", "strat_fold <= 2", "--val", "strat_fold = 9",
               "--test", "strat_fold = 8", "--checkpoint", str(tiny_checkpoint), "--out", str(out), *QUICK,
               "--json")
    summary = json.loads(done.stdout)
    report = check_run(out, summary, task="multilabel", labels=["MI", "STTC"], parts=["val", "test"],
                       base_sha=sha256(tiny_checkpoint))
    assert report["data"]["records"] == {"train": 24, "val": 12, "test": 8}
    assert report["data"]["source"]["kind"] == "manifest"
    assert report["data"]["selection"]["filters"]["test"] == "strat_fold = 8"
    # stderr is not a terminal: JSON-lines events, no ids or paths in them
    lines = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert {"data", "start", "eval", "done"} <= {e["event"] for e in lines}
    assert not any(r["record"] in done.stderr for rows in chosen.values() for r in rows)
    assert str(data_dir) not in done.stderr
    # a finished run is not overwritten by accident
    again = cli("finetune", str(data_dir), "--manifest", str(manifest), "--target", "MI", "--train",
                "strat_fold <= 2", "--val", "strat_fold = 9", "--checkpoint", str(tiny_checkpoint), "--out",
                str(out), *QUICK, check=False)
    assert again.returncode == 2 and "already holds a fine-tuned model" in again.stderr


@pytest.mark.slow
def test_finetune_from_a_servers_store_binary(tmp_path, tiny_checkpoint):
    data_dir, manifest, _ = write_subset(tmp_path, STORE_PARTS)
    store = tmp_path / "store"
    server = start_server(store, tiny_checkpoint, tmp_path / "logs")
    try:
        ingest = cli_json("ingest", str(data_dir), "--metadata", str(manifest), "--id-column", "record",
                          "--server", server.address, "--token", WRITE_TOKEN)
        assert ingest["stored"] == 26
        out = tmp_path / "run"
        done = cli("finetune", "--server", server.address, "--token", WRITE_TOKEN,
                   "--target", "ptbxl_superclass:MI", "--train", "strat_fold <= 2", "--val", "strat_fold = 9",
                   "--checkpoint", str(tiny_checkpoint), "--out", str(out), *QUICK)
    finally:
        server.stop()
    assert "val AUROC [95% CI]" in done.stdout and "fine-tuning" in done.stdout  # the text summary
    assert f"model {out / 'model.pt'}" in done.stdout
    report = json.loads((out / "report.json").read_text())
    summary = {"verdict": report["verdict"], "files": {"model": str(out / "model.pt")}}
    check_run(out, summary, task="binary", labels=["ptbxl_superclass:MI"], parts=["val"],
              base_sha=sha256(tiny_checkpoint))
    assert report["data"]["source"] == {"kind": "server's store", "stored": 26}
    assert report["data"]["records"] == {"train": 16, "val": 10}
    # the same store opened directly (no server holds it now): the very same data, by its digest
    selection = Selection(("ptbxl_superclass:MI",), train="strat_fold <= 2", val="strat_fold = 9", min_positives=3)
    data, intake = from_store(store, load_encoder(tiny_checkpoint), selection)
    assert intake.source == {"kind": "store", "stored": 26}
    assert data.digest == report["data"]["digest"]
    assert np.isin(data.split, ["train", "val"]).all()


@pytest.mark.slow
def test_finetune_refuses_a_checkpoint_that_is_not_an_encoder(tmp_path):
    not_an_encoder = tmp_path / "notes.pt"
    not_an_encoder.write_bytes(b"these are not weights")
    done = cli("finetune", "--store", str(tmp_path), "--target", "MI", "--checkpoint", str(not_an_encoder),
               "--out", str(tmp_path / "run"), check=False)
    assert done.returncode == 2
    assert f"--checkpoint {not_an_encoder} is not an encoder ECG Atlas can fine-tune" in done.stderr
    assert not (tmp_path / "run").exists()
