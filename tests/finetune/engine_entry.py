"""Fine-tuning runs in processes of their own, for the engine's kill -9 and DDP tests.

``python -m tests.finetune.engine_entry OUT [--resume] [--hold-at N]`` trains the tiny ECG-FM
network on the PTB-XL windows of ``engine_data`` with ``RESUME_CONFIG``, prints every event as a
JSON line, and saves the result's weights to ``OUT/result.pt``. ``--hold-at N`` stops the process
in place after update N (its ``step`` event), printing ``HOLD``, so a test can kill it there.

``ddp_worker`` and ``fail_on_rank`` are what ``finetune.distributed.launch`` runs in its workers.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from pathlib import Path

import torch

from ecg_atlas.errors import AtlasError
from ecg_atlas.finetune.train import TrainConfig, train
from tests.finetune.engine_data import ptbxl_data, tiny_network

#: 16 training windows at batch 4: 4 updates per epoch, a checkpoint every 3 updates and at each epoch end
RESUME_CONFIG = TrainConfig(epochs=3, batch_size=4, lr=1e-3, seed=3, device="cpu", save_every=3, log_every=1,
                            patience=10)


def run(out: Path, *, resume: bool = False, hold_at: int | None = None) -> None:
    torch.set_num_threads(1)  # the same arithmetic in every process the test compares

    def on_event(event: dict) -> None:
        print(json.dumps(event), flush=True)
        if event["event"] == "step" and event["update"] == hold_at:
            print("HOLD", flush=True)
            threading.Event().wait()  # until the test kills this process

    result = train(ptbxl_data(), tiny_network(), RESUME_CONFIG, out, resume=resume, on_event=on_event)
    torch.save({"network": result.network.state_dict(), "head": result.head.state_dict(),
                "history": result.history}, out / "result.pt")


def ddp_worker(out: str, batch_size: int, epochs: int) -> dict:
    """One worker of the DDP test (or, called directly, a run of one process): the tiny network
    with its dropouts off, trained on the PTB-XL windows; the weights are read back from
    OUT/checkpoint_last.pt."""
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=1e-3, seed=5, device="cpu", patience=10)
    network = tiny_network(dropouts=False)
    # Adam's eps from 1e-8 to 1e-6: a gradient that is only rounding noise (the key projection's
    # bias, whose true gradient is 0, since softmax ignores it) would otherwise be normalised into
    # a full lr-sized step whose sign depends on the summation order of the two runs.
    network.recipe["eps"] = 1e-6
    result = train(ptbxl_data(), network, cfg, out)
    return {"rank": int(os.environ.get("RANK", "0")), "history": result.history, "world_size": result.world_size}


def fail_on_rank(rank: int) -> str:
    if int(os.environ["RANK"]) == rank:
        raise AtlasError(f"worker {rank} refuses")
    return "ok"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--hold-at", type=int)
    args = parser.parse_args()
    run(args.out, resume=args.resume, hold_at=args.hold_at)


if __name__ == "__main__":
    main()
