"""`ecg-atlas embed --engine ray` over hostile files (issue 24): each bad file is one refused row
with a reason in its shard, the rest are embedded, and a file naming another file (an HDF5
external link, a WFDB signal file outside the header's folder) never brings the canary's bytes
into a shard."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from ecg_atlas.bulk.ray_job import inputs_from_paths, read_and_prepare
from ecg_atlas.cli import main as cli_main
from ecg_atlas.embedder.resolver import load_encoder

from .. import hostile_files

MUSE = "muse/musephi_mac55_muse_ecg1.xml"


def hostile_folder(root: Path, shared_data: Path) -> tuple[Path, set[str]]:
    """One valid MUSE export and one file of each hostile kind; (folder, stems of the bad files)."""
    folder = root / "ecgs"
    folder.mkdir(parents=True)
    canary = hostile_files.canary(root / "secret")  # outside the folder the job reads
    shutil.copy(shared_data / "formats" / MUSE, folder)
    bad = [hostile_files.edf_flat_digital_range(folder), hostile_files.wfdb_huge_sig_len(folder),
           hostile_files.hdf5_huge_shape(folder, shape=(1, 2**34, 12)),
           hostile_files.hdf5_external_link(folder, canary), hostile_files.wfdb_escaping_signal_file(folder, canary)]
    return folder, {Path(p).stem for p in bad}


def _batch(inputs) -> dict:
    return {"position": np.arange(len(inputs)), "ecg_id": np.array([i.ecg_id for i in inputs], object),
            "path": np.array([i.path for i in inputs], object),
            "row": np.array([-1 if i.row is None else i.row for i in inputs])}


def _divide_by_zero(recording, **kwargs):
    return 1 / 0


def _interrupt(recording, **kwargs):
    raise KeyboardInterrupt


def test_the_read_task_turns_every_failure_into_that_rows_refusal(tmp_path, shared_data, tiny_checkpoint):
    folder, bad = hostile_folder(tmp_path, shared_data)
    inputs = inputs_from_paths([folder])
    assert len(inputs) == len(bad) + 1  # a file that cannot even be listed is still one input
    prepare = load_encoder(str(tiny_checkpoint), device="cpu").preprocessing
    out = read_and_prepare(_batch(inputs), prepare=prepare, min_leads=None)
    rows = {i.ecg_id: (reason, message, windows)
            for i, reason, message, windows in zip(inputs, out["reason"], out["message"], out["windows"])}
    muse = rows.pop(Path(MUSE).stem)
    assert muse[0] == "" and muse[2].shape[0] >= 1
    assert sorted(i.split("/")[0] for i in rows) == sorted(bad)
    for ecg_id, (reason, message, windows) in rows.items():
        assert reason and message and windows.shape[0] == 0, ecg_id
        assert not hostile_files.holds_canary(message)

    # whatever the pipeline raises for a file is that file's `unreadable` refusal, type named
    muse_only = [i for i in inputs if i.ecg_id == Path(MUSE).stem]
    out = read_and_prepare(_batch(muse_only), prepare=_divide_by_zero, min_leads=None)
    assert out["reason"].tolist() == ["unreadable"] and "ZeroDivisionError" in out["message"][0]
    with pytest.raises(KeyboardInterrupt):  # stopping still stops
        read_and_prepare(_batch(muse_only), prepare=_interrupt, min_leads=None)


@pytest.mark.slow
def test_ray_embed_refuses_each_bad_file_and_embeds_the_rest(ray_cluster, tmp_path, shared_data, tiny_checkpoint,
                                                             capsys):
    folder, bad = hostile_folder(tmp_path, shared_data)
    out = tmp_path / "shards"
    assert cli_main(["embed", str(folder), "--engine", "ray", "--checkpoint", str(tiny_checkpoint), "--device", "cpu",
                     "--out", str(out), "--json"]) == 0
    printed = capsys.readouterr()
    summary = json.loads(printed.out)
    assert (summary["embedded"], summary["refused"]) == (1, len(bad))
    assert sum(summary["refusal_reasons"].values()) == len(bad)

    rows = [r for shard in sorted(out.glob("shard-*.parquet")) for r in pq.read_table(shard).to_pylist()]
    embedded = [r for r in rows if r["status"] == "embedded"]
    refused = [r for r in rows if r["status"] == "refused"]
    assert [r["ecg_id"] for r in embedded] == [Path(MUSE).stem] and embedded[0]["record_vector"] is not None
    assert sorted(r["ecg_id"].split("/")[0] for r in refused) == sorted(bad)
    assert all(r["reason"] and r["message"] and r["record_vector"] is None for r in refused)
    text = json.dumps([{k: v for k, v in r.items() if "vector" not in k} for r in rows], default=str)
    assert not hostile_files.holds_canary(text + printed.out + printed.err)
    for shard in out.glob("shard-*.parquet"):
        assert not hostile_files.holds_canary(shard.read_bytes())
