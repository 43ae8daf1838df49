"""Every verb that takes --store works while the README's own server holds that store (DuckDB's
file lock would refuse a second writer): it goes through the server's RPCs and says so."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.service.conftest import WRITE_TOKEN, cli

TOKEN = {"ECG_ATLAS_TOKEN": WRITE_TOKEN}


@pytest.mark.slow
def test_export_goes_through_the_server_that_holds_the_store(corpus_server, client, tmp_path):
    done = cli("export", "--store", str(corpus_server.store), "--out", str(tmp_path / "all.parquet"),
               "--tsv", str(tmp_path / "projector"), "--json", env=TOKEN)
    summary = json.loads(done.stdout)
    assert summary["via"] == "server" and "through the server at" in done.stderr
    table = pq.read_table(tmp_path / "all.parquet")
    assert summary["rows"] == table.num_rows == int(client.info()["ecg_count"])
    assert table.column("record_vector").type.list_size == 64
    assert (tmp_path / "projector.vectors.tsv").read_text().count("\n") == table.num_rows
    filtered = json.loads(cli("export", "--store", str(corpus_server.store), "--out", str(tmp_path / "f.parquet"),
                              "--where", "sex=F", "--columns", "sex,age", "--json", env=TOKEN).stdout)
    women = pq.read_table(tmp_path / "f.parquet")
    assert set(women.column("sex").to_pylist()) == {"F"} and filtered["rows"] == women.num_rows < table.num_rows


@pytest.mark.slow
def test_cluster_goes_through_the_server_and_keeps_its_outputs_in_the_store(corpus_server, client, tmp_path):
    done = cli("cluster", "--store", str(corpus_server.store), "--run", "cli_map", "--epochs", "30",
               "--labels", "label_groups", "--labels", "labels_snomed", "--json", env=TOKEN)
    summary = json.loads(done.stdout)
    assert summary["via"] == "server"
    assert summary["n_ecgs"] == int(client.info()["ecg_count"])
    # by default nothing lands in the working folder: the outputs are the server's, inside the store
    kept = corpus_server.store / "analysis" / "cohorts" / "cli_map"
    assert summary["outputs"] == str(kept) and summary["copied_to"] is None
    assert not (Path.cwd() / "cluster-cli_map").exists()
    assert (kept / "map_cluster.png").read_bytes().startswith(b"\x89PNG")
    assert (kept / "enrichment.csv").read_text().startswith("cluster")
    assert all(not r["label"].startswith("labels_snomed:") or len(r["label"].split(" ")) > 1
               for r in summary["top_enriched"])  # SNOMED codes named
    # piped stderr is not a terminal: the stages arrive as plain lines
    stages = [line for line in done.stderr.splitlines() if line.startswith("ecg-atlas cluster: ")]
    assert any(" umap-map " in line for line in stages) and any(" hdbscan " in line for line in stages)
    stored, _ = client.get(["cinc_ptbxl/HR00001"])
    assert isinstance(stored[0].metadata["cluster_cli_map"], int)
    out = tmp_path / "copy"  # --out: a copy where asked
    small = json.loads(cli("cluster", "--store", str(corpus_server.store), "--run", "cli_small", "--epochs", "10",
                           "--where", "age>=60", "--no-ecg-grids", "--out", str(out), "--json", env=TOKEN).stdout)
    assert small["copied_to"] == str(out) and (out / "run.json").exists() and (out / "map_cluster.png").exists()


def test_a_dead_servers_note_is_ignored(tmp_path):
    """A server.json left by a killed server does not send verbs to a dead address."""
    from ecg_atlas.service.presence import FILE, running_server

    (tmp_path / FILE).write_text(json.dumps({"address": "127.0.0.1:1", "pid": 2**22 + 12345, "tls": False}))
    assert running_server(tmp_path) is None


@pytest.mark.slow
def test_probe_verbs_go_through_the_server(corpus_server, tmp_path):
    store = str(corpus_server.store)
    done = cli("probe", "train", "--store", store, "--name", "cli_af", "--target", "label_groups:AF_AFL",
               "--bootstrap", "50", "--json", env=TOKEN)
    trained = json.loads(done.stdout)
    assert trained["via"] == "server" and trained["kind"] == "binary"
    # a unary RPC reports nothing while it runs: off a terminal the verb says it started and ended
    assert "ecg-atlas probe train: started" in done.stderr and "ecg-atlas probe train: done" in done.stderr
    flagged = trained["test"]["macro"]["left_out"]
    assert list(flagged) == ["label_groups:AF_AFL"]  # 19 in the corpus: never 10 in training and 10 in test
    listed = json.loads(cli("probe", "list", "--store", store, "--json", env=TOKEN).stdout)
    assert "cli_af" in [p["name"] for p in listed]
    evaluated = json.loads(cli("probe", "eval", "--store", store, "--name", "cli_af", "--bootstrap", "50",
                               "--json", env=TOKEN).stdout)
    assert evaluated["via"] == "server" and evaluated["n_left_out"] > 0
    # one macro rule: what training left out, evaluation leaves out too, and says why
    assert set(flagged) <= set(evaluated["macro_left_out"])
    assert not set(evaluated["macro_left_out"]) & set(evaluated["macro_labels"])
    text = cli("probe", "eval", "--store", store, "--name", "cli_af", "--bootstrap", "20", env=TOKEN).stdout
    assert all(f"{label}: too few positives/negatives" in text for label in evaluated["macro_left_out"])
    predicted = json.loads(cli("probe", "predict", "--store", store, "--name", "cli_af", "--ids",
                               "cinc_ptbxl/HR00001", "--json", env=TOKEN).stdout)
    [row] = predicted["predictions"]
    assert 0.0 <= row["scores"]["label_groups:AF_AFL"] <= 1.0


@pytest.mark.slow
def test_explain_a_stored_ecg_through_the_server(corpus_server, tmp_path):
    out = tmp_path / "saliency.png"
    done = cli("explain", "cinc_ptbxl/HR00001", "--store", str(corpus_server.store), "--out", str(out),
               env=TOKEN)
    assert "through the server" in done.stdout and out.read_bytes().startswith(b"\x89PNG")
