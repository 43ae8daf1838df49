"""Distributed fine-tuning with PyTorch's own engine (ecg_atlas.finetune.distributed): two CPU
processes (gloo, DistributedSampler, DDP) with batch b end with the weights of one process with
batch 2b; a worker's AtlasError reaches the caller; an outside torchrun is recognised."""

from __future__ import annotations

import pytest
import torch

from ecg_atlas.errors import AtlasError
from ecg_atlas.finetune import distributed
from ecg_atlas.finetune.checkpoint import LAST
from tests.finetune import engine_entry
from tests.finetune.engine_data import tiny_network


@pytest.mark.slow
def test_two_processes_with_batch_b_match_one_with_batch_2b(tmp_path):
    """Dropouts are OFF in both runs (engine_entry.ddp_worker: tiny_network(dropouts=False)): with
    them on, each process would draw its own masks and the runs could not agree; Adam's eps is
    1e-6 in both (ddp_worker says why). 16 training windows, b = 2: 8 updates over 2 epochs, the
    second epoch's order reshuffled by set_epoch. Measured: max abs difference 1.2e-7."""
    two = distributed.launch(2, engine_entry.ddp_worker, str(tmp_path / "two"), 2, 2)
    assert two["rank"] == 0 and two["world_size"] == 2
    one = engine_entry.ddp_worker(str(tmp_path / "one"), 4, 2)  # in this process: a group of one
    assert one["world_size"] == 1

    a = torch.load(tmp_path / "two" / LAST, weights_only=True)
    b = torch.load(tmp_path / "one" / LAST, weights_only=True)
    assert a["progress"]["updates"] == b["progress"]["updates"] == 8
    start = tiny_network(dropouts=False).state_dict()
    moved = max(float((b["network"][k] - start[k]).abs().max()) for k in start)
    assert moved > 1e-3  # the comparison below means something
    for part in ("network", "head"):
        for key, value in b[part].items():
            assert float((a[part][key] - value).abs().max()) <= 1e-5, f"{part}.{key}"
    assert [r["val_macro_auroc"] for r in two["history"]] == pytest.approx(
        [r["val_macro_auroc"] for r in one["history"]], abs=1e-6)


@pytest.mark.slow
def test_a_workers_atlas_error_reaches_the_caller():
    with pytest.raises(AtlasError, match="worker 1 refuses"):
        distributed.launch(2, engine_entry.fail_on_rank, 1)


def test_joined_reads_the_launchers_environment(monkeypatch):
    for name in distributed.GROUP_ENV:
        monkeypatch.delenv(name, raising=False)
    assert not distributed.joined()
    group = distributed.setup("cpu")
    assert (group.rank, group.world_size, group.distributed, group.device.type) == (0, 1, False, "cpu")
    assert group.gather("x") == ["x"] and group.any(True) and group.from_rank0(3) == 3
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "0", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29500"}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert distributed.joined()
    monkeypatch.setenv("MASTER_ADDR", "")
    assert not distributed.joined()
