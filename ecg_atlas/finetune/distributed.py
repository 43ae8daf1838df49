"""Several training processes with PyTorch's own engine: torch.distributed and its elastic launcher.

* ``launch(n, fn, *args)`` starts ``n`` local workers through ``torch.distributed.launcher``
  (torchrun's elastic agent: c10d rendezvous on 127.0.0.1, a free port) and returns rank 0's result.
* Under an outside ``torchrun`` (one node or several) the environment already names the group
  (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): ``joined()`` says
  so and ``setup()`` joins it. Nothing here assumes one node beyond ``LOCAL_RANK`` picking the GPU.
* ``Group`` is what the training loop needs from the group: its rank and size, the device, and the
  few collectives it uses (sums, a broadcast decision, gathering objects). With one process every
  one of them is the identity, so the loop has one code path.

gloo carries the collectives on a CPU, NCCL on GPUs.
"""

from __future__ import annotations

import os
import pickle
import socket
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from ecg_atlas.embedder.encoders.base import resolve_device
from ecg_atlas.errors import AtlasError

#: The variables torchrun (or any launcher using env:// rendezvous) sets for each worker.
GROUP_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


def joined() -> bool:
    """True when this process is a worker of an outside launcher (torchrun): the group's
    environment variables are all set."""
    return all(os.environ.get(name) for name in GROUP_ENV)


@dataclass
class Group:
    """This process's place in the training group (one process: rank 0 of 1)."""

    rank: int
    world_size: int
    device: torch.device
    #: True when ``setup`` created the process group (and ``teardown`` destroys it)
    owned: bool = False

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over ranks, in place (the identity with one process)."""
        if self.distributed:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank (a decision all ranks must share)."""
        if not self.distributed:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def from_rank0(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (a picklable object)."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.distributed:
            return [value]
        out: list = [None] * self.world_size
        dist.all_gather_object(out, value)
        return out


def setup(device: str = "auto") -> Group:
    """The group this process trains in: the outside launcher's (joined, or already initialised by
    the caller) or a group of one. A GPU run uses ``cuda:LOCAL_RANK`` and NCCL; a CPU run gloo."""
    if not (joined() or dist.is_initialized()):
        return Group(0, 1, resolve_device(device))
    wanted = resolve_device(device)
    if wanted.type == "cuda":
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if local_rank >= torch.cuda.device_count():
            raise AtlasError(f"worker with LOCAL_RANK {local_rank} has no GPU of its own "
                             f"({torch.cuda.device_count()} visible); start at most one worker per GPU")
        wanted = torch.device("cuda", local_rank)
        torch.cuda.set_device(wanted)
    owned = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if wanted.type == "cuda" else "gloo")
        owned = True
    return Group(dist.get_rank(), dist.get_world_size(), wanted, owned)


def teardown(group: Group) -> None:
    if group.owned and dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(n_proc: int, fn: Callable, *args) -> Any:
    """Run ``fn(*args)`` in ``n_proc`` local workers started by torch's elastic launcher (what
    ``torchrun --nproc-per-node n_proc`` does) and return rank 0's result.

    ``fn`` and ``args`` travel to fresh processes (spawn): ``fn`` must be a module-level function
    and ``args`` picklable. An ``AtlasError`` raised in a worker is raised here again; any other
    failure becomes an ``AtlasError`` naming the ranks that failed.
    """
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.launcher.api import LaunchConfig, elastic_launch

    if n_proc < 1:
        raise AtlasError(f"the number of processes must be at least 1, got {n_proc}")
    port = free_port()
    config = LaunchConfig(min_nodes=1, max_nodes=1, nproc_per_node=n_proc, run_id=f"ecg-atlas-{uuid.uuid4().hex[:12]}",
                          rdzv_backend="c10d", rdzv_endpoint=f"127.0.0.1:{port}", local_addr="127.0.0.1",
                          max_restarts=0, start_method="spawn")
    with tempfile.TemporaryDirectory(prefix="ecg-atlas-launch-") as errors:
        try:
            results = elastic_launch(config, _worker)(errors, fn, args)
        except ChildFailedError as exc:
            raise _worker_error(Path(errors), exc) from None
    return results[0]


def _worker(errors: str, fn: Callable, args: tuple) -> Any:
    """One launched worker: share the CPU cores among the local workers (as torchrun's
    OMP_NUM_THREADS=1 default would, less bluntly), run ``fn``, and leave its error for the parent."""
    if "OMP_NUM_THREADS" not in os.environ:
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    try:
        return fn(*args)
    except BaseException as exc:
        try:
            blob = pickle.dumps(exc)
        except Exception:  # an exception that does not pickle travels as its text
            blob = pickle.dumps(AtlasError(f"{type(exc).__name__}: {exc}"))
        Path(errors, f"rank{os.environ.get('RANK', '0')}.pickle").write_bytes(blob)
        raise


def _worker_error(errors: Path, failure: Exception) -> AtlasError:
    found = []
    for path in sorted(errors.glob("rank*.pickle")):
        try:
            found.append(pickle.loads(path.read_bytes()))
        except Exception:
            continue
    for exc in found:
        if isinstance(exc, AtlasError):
            return exc
    if found:
        return AtlasError(f"a training worker failed: {type(found[0]).__name__}: {found[0]}")
    return AtlasError(f"a training worker failed without raising (killed or out of memory?): {failure}")
