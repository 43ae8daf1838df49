"""Search backends: the derived vector index that sits beside the DuckDB rows.

Every backend holds L2-normalised float32 vectors keyed by the row's sequence number (int64),
searches by inner product (= cosine) and can restrict a search to an allowed set of sequence
numbers. Which one runs is decided when the store opens (`resolve_backend`) and reported by
`Store.info()`:

- ``faiss-cpu``: FAISS on the CPU; exact (``flat``), ``ivf`` (IVF-Flat), ``hnsw`` or ``ivfpq``
  (IVF with compressed codes — 4 bits per dimension, or product-quantised where the memory
  budget is tighter — re-ranked with the stored float vectors: stores past memory, sized by a
  memory budget, `ivfpq_params`). The approximate kinds tune their own search breadth (IVF
  nprobe, HNSW efSearch) for recall (`tune`) and hand the tuned values to whoever saves them
  (`tuning` / `apply_tuning`).
- ``faiss-gpu``: FAISS's GPU flat index, when the installed faiss was built with GPU support;
  an ``ivfpq`` store there answers from copies sharded across every GPU (`ShardedReplica`).
- ``torch-cuda`` / ``torch-cpu``: exact search as one matmul + top-k on a torch device, filters
  as boolean masks; the GPU path for a faiss without GPU support (``torch-cpu`` is the same code
  on the CPU, used to test it).

Modules, one job each: ``base`` (the `VectorIndex` contract, exact top-k), ``tuner`` (recall
tuning), ``cpu`` (FAISS flat / IVF / HNSW, IVF list sizing), ``ivfpq`` (the compressed kind, its
memory-budget sizing and ``--index-memory`` parsing), ``gpu`` (FAISS GPU copies and multi-GPU
replicas), ``torch_exact``, ``selection`` (which backend runs; making and loading an index).
Devices are parsed by `ecg_atlas.devices`.
"""

from .base import BRUTE_FORCE_MAX, INDEX_KINDS, TRAINED_KINDS, VectorIndex, exact_top_k
from .cpu import FaissFlat, FaissHNSW, FaissIVF, ivf_nlist, training_sample_size
from .gpu import FAISS_GPU_MAX_K, FaissGpuFlat, ShardedReplica, gpu_placer
from .ivfpq import IVFPQ_REFINE_FACTORS, FaissIVFPQ, IVFPQParams, ivfpq_params, parse_memory
from .selection import gpu_backend, load_index, new_index, resolve_backend
from .torch_exact import TorchExact
from .tuner import TARGET_RECALL

__all__ = [
    "BRUTE_FORCE_MAX", "FAISS_GPU_MAX_K", "INDEX_KINDS", "IVFPQ_REFINE_FACTORS", "TARGET_RECALL",
    "TRAINED_KINDS", "FaissFlat", "FaissGpuFlat", "FaissHNSW", "FaissIVF", "FaissIVFPQ", "IVFPQParams",
    "ShardedReplica", "TorchExact", "VectorIndex", "exact_top_k", "gpu_backend", "gpu_placer",
    "ivf_nlist", "ivfpq_params", "load_index", "new_index", "parse_memory", "resolve_backend",
    "training_sample_size",
]
