"""Turn a pretraining run's checkpoint into a release file: no optimizer state, same layout.

The file keeps the fairseq-signals layout and the pretraining heads (so ``--init`` can continue
pretraining from it), drops the Adam moments (two thirds of the run's checkpoint), and records where
it came from in ``extra_state["ecg_atlas_release"]``. This is how the bundled encoder was made::

    python -m ecg_atlas.embedder.pretrain.export runs/bundled/checkpoint_last.pt \\
        embedder/bundled/ecg-atlas-small-v1.pt --name ecg-atlas-small-v1
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path

import torch

from ecg_atlas.atomic import write_atomic
from ecg_atlas.errors import CheckpointError


def export_release(src: str | os.PathLike, dst: str | os.PathLike, *, name: str, notes: dict | None = None) -> str:
    """Write ``dst`` from the pretraining checkpoint ``src``; returns the new file's sha256."""
    payload = read_payload(src, "pretraining checkpoint", ("cfg", "model"))
    history = payload.get("extra_state", {}).get("ecg_atlas_history", [])
    updates = payload.get("optimizer_history", [{}])[-1].get("num_updates")
    return write_release(payload, dst, name=name,
                         notes={"num_updates": updates, "logged_updates": len(history), **(notes or {})})


def read_payload(path: str | os.PathLike, what: str, keys: tuple[str, ...]) -> dict:
    """The dict a release step reads (weights only), or CheckpointError naming ``what`` was expected."""
    if not Path(path).is_file():
        raise CheckpointError(f"no {what} at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unreadable file gets the same clear message
        raise CheckpointError(f"cannot read {what} {path}: {exc}") from exc
    if not isinstance(payload, dict) or any(k not in payload for k in keys):
        raise CheckpointError(f"{path} is not a {what} (no {' / '.join(keys)})")
    return payload


def write_release(payload: dict, dst: str | os.PathLike, *, name: str, notes: dict | None = None) -> str:
    """Write a pretraining-layout ``payload`` as release ``name``: no optimizer state, where it came
    from in ``extra_state["ecg_atlas_release"]``, atomically; returns the file's sha256. The bytes
    depend on the file name too (torch names the archive after it): release under the final name."""
    payload["last_optimizer_state"] = None
    payload.setdefault("extra_state", {})["ecg_atlas_release"] = {"name": name, **(notes or {})}
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(dst, lambda tmp: torch.save(payload, tmp))


def run_release(write: Callable[[], str], dst: Path) -> int:
    """A release command's ending: ``write()`` it, then print where and its sha256 (exit 0), or the
    error (exit 2)."""
    try:
        digest = write()
    except CheckpointError as exc:
        print(f"error: {exc}")
        return 2
    print(f"wrote {dst} ({dst.stat().st_size / 2**20:.1f} MiB), sha256 {digest}")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", type=Path, help="a run's checkpoint_last.pt")
    ap.add_argument("dst", type=Path, help="the release file to write")
    ap.add_argument("--name", required=True, help="release name, e.g. ecg-atlas-small-v1")
    ap.add_argument("--recipe", default=None, help="the command that made the run (recorded in the file)")
    args = ap.parse_args(argv)
    return run_release(lambda: export_release(args.src, args.dst, name=args.name,
                                              notes={"recipe": args.recipe} if args.recipe else None), args.dst)


if __name__ == "__main__":
    raise SystemExit(main())
