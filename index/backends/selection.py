"""Which backend runs (`resolve_backend`: the device, the GPUs present, the faiss build) and the
factory that makes (`new_index`) or reads (`load_index`) an index for it."""

from __future__ import annotations

import os
from collections.abc import Callable

import faiss
import numpy as np

from ecg_atlas.devices import parse_device, require_visible
from ecg_atlas.errors import StoreError

from .base import INDEX_KINDS, VectorIndex
from .cpu import FaissFlat, FaissHNSW, FaissIVF, ivf_nlist
from .gpu import FaissGpuFlat, gpu_placer
from .ivfpq import FaissIVFPQ, ivfpq_params
from .torch_exact import TorchExact


def _nvidia_present() -> bool:
    # Checked before importing torch, so a CPU-only server does not pay torch's memory to find out.
    return os.path.exists("/dev/nvidiactl") or os.path.exists("/dev/nvidia0")


def _torch_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count()


def gpu_backend(backend: str) -> tuple[str, int]:
    """("faiss-gpu" | "torch-cuda" | ..., GPU ordinal) of a `resolve_backend` name."""
    name, _, ordinal = backend.partition(":")
    return name, int(ordinal or 0)


def resolve_backend(device: str, backend: str, kind: str) -> str:
    """The backend to run: "faiss-cpu", "faiss-gpu", "torch-cpu" or "torch-cuda" (GPU backends
    on a GPU other than the first say which: "torch-cuda:1").

    device: "auto" (a GPU when there is one), "cpu", "cuda" or "cuda:N". backend: "auto",
    "faiss" or "torch". GPU search is exact (``flat``) or ``ivfpq`` (sharded across the GPUs);
    an ivf / hnsw store on "auto" runs on the CPU. A device string of another form, or a "cuda:N"
    past the visible GPUs, raises DeviceError (`ecg_atlas.devices`); impossible combinations
    raise StoreError.
    """
    chosen = parse_device(device)
    if chosen.ordinal:  # "cuda:0" runs as "cuda"
        name = resolve_backend(chosen.type, backend, kind)
        require_visible(chosen, faiss.get_num_gpus() if name == "faiss-gpu" else _cuda_devices())
        return name if kind == "ivfpq" else f"{name}:{chosen.ordinal}"  # ivfpq spans every GPU
    device = chosen.type
    if backend not in ("auto", "faiss", "torch"):
        raise StoreError(f"backend must be 'auto', 'faiss' or 'torch', got {backend!r}")
    if kind not in INDEX_KINDS:
        raise StoreError(f"index_kind must be one of {', '.join(INDEX_KINDS)}, got {kind!r}")
    faiss_gpu = hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0
    if backend == "torch" and kind != "flat":
        raise StoreError(f"the torch backend searches exactly; index_kind {kind!r} needs backend 'faiss'")
    if device == "cpu":
        return "torch-cpu" if backend == "torch" else "faiss-cpu"
    if device == "cuda":
        if kind == "ivfpq" and faiss_gpu and backend != "torch":
            return "faiss-gpu"
        if kind != "flat":
            raise StoreError("GPU search is exact or ivfpq; open with index_kind='flat' or device='cpu' "
                             f"(got {kind!r})")
        if backend != "torch" and faiss_gpu:
            return "faiss-gpu"
        if backend == "faiss":
            raise StoreError("device='cuda' with backend='faiss' needs a faiss built with GPU support (faiss-gpu)")
        if not _torch_cuda():
            raise StoreError("device='cuda' was asked for but torch sees no CUDA device")
        return "torch-cuda"
    # auto
    if backend == "torch":
        return "torch-cuda" if _nvidia_present() and _torch_cuda() else "torch-cpu"
    if kind in ("flat", "ivfpq") and faiss_gpu:
        return "faiss-gpu"
    if kind == "flat" and backend == "auto" and _nvidia_present() and _torch_cuda():
        return "torch-cuda"
    return "faiss-cpu"


def _gpu_replica(backend: str) -> tuple[list[int], Callable[[faiss.Index, int], faiss.Index]] | None:
    """Where an ivfpq index on `backend` keeps its search copy: every GPU FAISS sees, or none."""
    return (list(range(faiss.get_num_gpus())), gpu_placer()) if backend == "faiss-gpu" else None


def new_index(backend: str, kind: str, dim: int, training_sample: np.ndarray | None = None,
              n_rows: int = 0, memory_budget: int | None = None) -> VectorIndex:
    """An empty index. An "ivf" / "ivfpq" index is trained on `training_sample` (normalised
    vectors) with lists for `n_rows` (`ivf_nlist`; ivfpq codes sized to `memory_budget` bytes,
    `ivfpq_params`); without a sample it starts as exact search (the store trains it once it
    has data)."""
    backend, ordinal = gpu_backend(backend)
    if backend.startswith("torch"):
        return TorchExact(dim, f"cuda:{ordinal}" if backend == "torch-cuda" else "cpu")
    if kind == "ivfpq" and training_sample is not None:
        return FaissIVFPQ.train(dim, training_sample, ivfpq_params(n_rows, dim, memory_budget),
                                replica=_gpu_replica(backend))
    if backend == "faiss-gpu":
        return FaissGpuFlat(dim, device=ordinal)
    if kind == "hnsw":
        return FaissHNSW(dim)
    if kind == "ivf" and training_sample is not None:
        return FaissIVF.train(dim, training_sample, ivf_nlist(n_rows))
    return FaissFlat(dim)


def load_index(path: str, backend: str, kind: str, dim: int) -> VectorIndex:
    """Read a saved index for `backend`/`kind`; raises (StoreError / RuntimeError) if unusable."""
    backend, ordinal = gpu_backend(backend)
    loaders: dict[tuple[str, str], Callable[[], VectorIndex]] = {
        ("faiss-cpu", "flat"): lambda: FaissFlat.load(path, dim),
        ("faiss-cpu", "ivf"): lambda: FaissIVF.load(path, dim),
        ("faiss-cpu", "hnsw"): lambda: FaissHNSW.load(path, dim),
        ("faiss-cpu", "ivfpq"): lambda: FaissIVFPQ.load(path, dim),
        ("faiss-gpu", "flat"): lambda: FaissGpuFlat(dim, FaissFlat.load(path, dim).index, device=ordinal),
        ("faiss-gpu", "ivfpq"): lambda: FaissIVFPQ.load(path, dim, replica=_gpu_replica(backend)),
        ("torch-cpu", "flat"): lambda: TorchExact.load(path, dim, "cpu"),
        ("torch-cuda", "flat"): lambda: TorchExact.load(path, dim, f"cuda:{ordinal}"),
    }
    if (backend, kind) not in loaders:
        raise StoreError(f"no loader for a {kind} index on {backend}")
    return loaders[(backend, kind)]()
