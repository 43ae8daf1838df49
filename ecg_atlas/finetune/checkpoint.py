"""The state a fine-tuning run resumes from after a crash or kill -9: ``OUT/checkpoint_last.pt``.

One file holds everything the loop needs to carry on exactly where it was: the network, head,
optimizer and schedule; the position (epoch and the batches of it already trained, with the
sampler's seeded permutation the skipped batches are the same ones); every rank's random-number
state (dropout masks continue as they would have); the best weights so far with their metric and
the evaluations since; the history and the seconds spent. It is written with the store's atomic
write (``ecg_atlas.atomic.write_atomic``: a reader sees the previous file or the new one, never a part)
and read with torch's weights-only unpickler.

``run`` names what the state belongs to (data digest, processes, batch size, seed, head shape); a
resume with other settings is refused rather than silently continued differently.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ecg_atlas.atomic import write_atomic
from ecg_atlas.errors import AtlasError, CheckpointError

FORMAT = "ecg-atlas-finetune-state/1"
LAST = "checkpoint_last.pt"
#: the settings a resume must share with the run that wrote the state, and how the CLI names them
RUN_KEYS = {"data_digest": "the training data (its digest)", "world_size": "--nproc (processes)",
            "batch_size": "--batch-size", "seed": "--seed", "task": "the task", "n_outputs": "the labels",
            "dim": "the encoder", "augment_fs": "--augment"}


def rng_state(device: torch.device) -> dict:
    """This process's random-number generators (CPU, and the GPU's when training on one)."""
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)


def cpu_copy(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A state dict detached from the module, on the CPU (a snapshot, not a view)."""
    return {k: v.detach().to("cpu", copy=True) for k, v in module.state_dict().items()}


def save_state(out_dir: Path, state: dict) -> str:
    """Write ``state`` to ``out_dir/checkpoint_last.pt`` atomically; returns the file's sha256."""
    return write_atomic(Path(out_dir) / LAST, lambda tmp: torch.save({"format": FORMAT, **state}, tmp))


def load_state(out_dir: Path) -> dict | None:
    """The state in ``out_dir`` (None when there is none yet)."""
    path = Path(out_dir) / LAST
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"the training state {LAST} in the output folder cannot be read "
                              f"({type(exc).__name__}); delete it to start over, or run without --resume "
                              "in a new folder") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{LAST} in the output folder is not a fine-tuning state ({FORMAT}); "
                              "use a new output folder")
    return state


def check_same_run(saved: dict, current: dict) -> None:
    """Refuse to resume a state written with other settings (``RUN_KEYS``), naming what differs."""
    differ = [f"{RUN_KEYS[k]}: saved {saved.get(k)!r}, now {current.get(k)!r}"
              for k in RUN_KEYS if saved.get(k) != current.get(k)]
    if differ:
        raise AtlasError("cannot resume: the saved training state was written with other settings ("
                         + "; ".join(differ) + "); resume with the same ones, or start over in a new folder")
