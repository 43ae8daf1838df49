"""`ecg-atlas embed --engine ray`: a real local Ray cluster over the sample corpus."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pytest

from ecg_atlas.bulk.ray_job import JobOptions, inputs_from_manifest, inputs_from_paths, run_job
from ecg_atlas.bulk.shards import SHARD_PATTERN
from ecg_atlas.cli import main as cli_main
from ecg_atlas.errors import AtlasError

pytestmark = pytest.mark.slow  # a Ray cluster


def shard_rows(folder: Path, columns="ecg_id, status, reason, record_vector, segment_vectors"):
    return duckdb.sql(f"SELECT {columns} FROM read_parquet('{folder}/shard-*.parquet', union_by_name = true) "
                      "ORDER BY ecg_id").fetchall()


def test_every_ecg_lands_once_with_its_vectors_or_its_reason(corpus_shards):
    folder, summary, inputs = corpus_shards
    rows = shard_rows(folder)
    assert [r[0] for r in rows] == sorted(i.ecg_id for i in inputs)  # each input exactly once
    assert summary.embedded + summary.refused == len(inputs) and summary.duplicates_dropped == 0
    reasons = {r[2] for r in rows if r[1] == "refused"}
    assert reasons and reasons <= {"too_few_leads", "too_short", "too_many_nans", "bad_sampling_rate",
                                   "unreadable", "not_found"}  # documented reason codes, never internal_error
    assert all(r[3] is not None and len(r[4]) >= 1 for r in rows if r[1] == "embedded")
    meta = pq.read_schema(next(folder.glob("shard-*.parquet"))).metadata
    assert meta[b"ecg_atlas.model_id"].decode() == summary.model_id
    assert meta[b"ecg_atlas.checkpoint_sha256"].decode() == summary.checkpoint_sha256


def test_ray_vectors_equal_single_process_embed(corpus_shards, ecg_dir, tiny_checkpoint, tmp_path):
    folder, _, _ = corpus_shards
    single = tmp_path / "single.parquet"
    assert cli_main(["embed", str(ecg_dir), "--checkpoint", str(tiny_checkpoint), "--device", "cpu",
                     "--out", str(single)]) == 0
    expected = duckdb.sql(f"SELECT ecg_id, record_vector, segment_vectors FROM '{single}' ORDER BY ecg_id").fetchall()
    got = [r for r in shard_rows(folder) if r[1] == "embedded"]
    assert [r[0] for r in got] == [r[0] for r in expected]
    for ours, theirs in zip(got, expected):
        assert np.abs(np.array(ours[3]) - np.array(theirs[1])).max() <= 1e-6, ours[0]
        assert np.abs(np.array(ours[4]) - np.array(theirs[2])).max() <= 1e-6, ours[0]


def test_a_rerun_skips_finished_shards_and_redoes_a_missing_one(ray_cluster, corpus_shards, tiny_checkpoint, ecg_dir):
    folder, first, inputs = corpus_shards
    before = shard_rows(folder)
    options = JobOptions(checkpoint=str(tiny_checkpoint), shard_size=50)
    again = run_job(inputs, folder, options, progress=False)
    assert again.shards_skipped == first.shards and again.embedded + again.refused == 0
    (folder / SHARD_PATTERN.format(2)).unlink()
    redone = run_job(inputs, folder, options, progress=False)
    assert redone.shards_skipped == first.shards - 1 and redone.embedded + redone.refused == 50
    after = shard_rows(folder)
    assert [r[:3] for r in after] == [r[:3] for r in before]
    for new, old in zip(after, before):  # other batch neighbours: equal to float rounding
        if new[1] == "embedded":
            assert np.abs(np.array(new[3]) - np.array(old[3])).max() <= 1e-6
    with pytest.raises(AtlasError, match="another job"):  # other inputs into the same folder
        run_job(inputs[:10], folder, options, progress=False)


def test_progress_comes_through_the_callback_and_the_job_prints_nothing(ray_cluster, ecg_dir, tiny_checkpoint,
                                                                        tmp_path, capsys):
    inputs = inputs_from_paths([ecg_dir / "cinc_cpsc2018"])
    calls = []
    summary = run_job(inputs, tmp_path / "shards", JobOptions(checkpoint=str(tiny_checkpoint), shard_size=4),
                      progress=lambda done, total: calls.append((done, total)))
    assert summary.embedded + summary.refused == len(inputs) == 10
    assert calls[-1] == (10, 10) and [d for d, _ in calls] == sorted(d for d, _ in calls)
    assert capsys.readouterr() == ("", "")  # no bar, no summary: the CLI draws and prints those


def _encoder_actor_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if b"EncoderActor" in (entry / "cmdline").read_bytes():
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_a_killed_encoder_worker_is_redone_once(ray_cluster, ecg_dir, tiny_checkpoint, tmp_path):
    """The encoder actor is SIGKILLed mid-run; Ray restarts it, the job completes, every ECG once."""
    inputs = inputs_from_manifest(ecg_dir / "manifest.csv", path_column="record", id_column="record")[:160]
    out = tmp_path / "shards"
    result = {}
    job = threading.Thread(target=lambda: result.update(summary=run_job(
        inputs, out, JobOptions(checkpoint=str(tiny_checkpoint), shard_size=10, batch_size=4), progress=False)))
    job.start()
    killed = None
    deadline = time.monotonic() + 60
    while killed is None and time.monotonic() < deadline and job.is_alive():
        if len(list(out.glob("shard-*.parquet"))) >= 2 and (pids := _encoder_actor_pids()):
            os.kill(pids[0], signal.SIGKILL)
            killed = pids[0]
        time.sleep(0.05)
    job.join(120)
    assert killed is not None, "the job finished before a worker could be killed"
    summary = result["summary"]
    assert summary.embedded + summary.refused == len(inputs)
    rows = shard_rows(out, "ecg_id, status, \"metadata.age\"")
    assert sorted(r[0] for r in rows) == sorted(i.ecg_id for i in inputs)  # nothing missing, nothing twice
    assert any(r[2] is not None for r in rows)  # manifest columns travel as metadata


def test_embed_command_with_the_ray_engine(ray_cluster, ecg_dir, tiny_checkpoint, tmp_path, capsys):
    out = tmp_path / "shards"
    args = ["embed", str(ecg_dir / "cinc_cpsc2018"), "--engine", "ray", "--checkpoint", str(tiny_checkpoint),
            "--device", "cpu", "--shard-size", "4", "--out", str(out), "--json"]
    assert cli_main(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert (summary["embedded"], summary["shards"], summary["actor_device"]) == (10, 3, "cpu")
    assert sorted(p.name for p in out.glob("shard-*.parquet")) == [SHARD_PATTERN.format(i) for i in range(3)]
    assert cli_main(args) == 0  # finished: nothing to redo
    assert json.loads(capsys.readouterr().out)["shards_skipped"] == 3
