"""Server settings: one dataclass, filled from `ecg-atlas serve` flags (and a few env vars).

Limits and why they default to what they do:

* ``max_receive_message_bytes`` 64 MiB: the largest ECG the preprocessing accepts (600 s, 12
  leads, 1000 Hz, float32) is 28.8 MB, so every valid ECG fits in one message with room to spare;
  a longer one arrives whole and is refused with INVALID_ARGUMENT ("too long") rather than a bare
  RESOURCE_EXHAUSTED. Bulk work goes through the Ingest stream, one ECG per message.
* ``max_send_message_bytes`` 64 MiB: Get with segment vectors of many long ECGs.
* ``max_batch_segments`` 8 on a CPU, 256 on a GPU / ``max_queue_delay_ms`` 5: the encoder runs
  batches of up to that many five-second segments and waits at most 5 ms for a batch to fill. On
  the CPU small batches are faster per segment (activations stay in cache: ECG-FM's size embeds
  5.98 segments/s at batch 8 and 5.40 at 32 on 2 cores; the bundled encoder, two workers, is best
  at 8–16 and slowest at 64, BENCHMARKS.md); a GPU needs large ones to fill (ECG-FM's size at
  bf16 needs ~256 segments per batch before the Python dispatch of a forward, a few ms, is well
  below the GPU's time for it: issue 18; figures for a GPU are not measured yet, BENCHMARKS.md).
* ``device`` auto | cpu | cuda | cuda:N; ``dtype`` auto (bfloat16 on a GPU, float32 on a CPU) or
  float32 | bfloat16 | float16.
* ``encoder_workers`` 2 on a GPU and on a CPU with 2 or more cores: threads that run encoder
  batches side by side. On a GPU each has its own CUDA stream and pinned staging buffers
  (``embedder/staging.py``): while one waits for its batch on the device (GIL released), the other
  assembles and dispatches the next, so host and device overlap. On a CPU each has
  ``cores // encoder_workers`` torch threads. On 2 cores, two
  single-threaded batches at once beat one batch on two threads (no synchronisation between the
  threads of every op), and a preprocessing thread that takes a core slows one worker instead of
  stalling both (BENCHMARKS.md). ``fast="compile"`` keeps 1 (its compiled graph is not shared
  across threads here).
* ``preprocess_processes`` auto: decode and preprocess ECG messages on worker processes
  (``service/prepare_pool.PreparePool``) on a GPU, on threads (``preprocess_workers``, 2) on a CPU. On a
  GPU the encoder runs thousands of ECGs/s and needs 0.5–1 ms of host preprocessing per ECG (3–6
  cores, BENCHMARKS.md GPU), which threads cannot give: their NumPy work holds the GIL in part, and
  the encoder workers' Python dispatch needs it. Auto gives ``cores - 2`` processes (the encoder
  workers and the gRPC threads keep two), at most 8 (enough for ~8,000 ECGs/s). On a CPU the
  encoder itself is the limit (~20 ms per ECG for the bundled encoder on 2 cores, against ~1 ms of
  preprocessing) and shares the cores with the workers: there the hand-off to processes (~0.8 ms
  of the server's CPU per ECG) costs more than it frees (ingest at 0.70x threads with a nearly
  free encoder on 2 cores, BENCHMARKS.md GPU). 0 forces threads, N forces N processes.
* ``max_queue_segments`` 4096: segments waiting for the encoder; beyond that new work gets
  RESOURCE_EXHAUSTED at once instead of a growing queue (about a minute of base-model CPU work).
* ``max_concurrent_rpcs`` 64: RPCs being handled at once; more get RESOURCE_EXHAUSTED.
* ``max_ingest_in_flight`` 32: ECGs one Ingest stream may have decoded but not yet stored; the
  server stops reading the stream until they drain, and gRPC flow control pushes back on the
  client (backpressure).
* ``max_metadata_keys`` 64 / ``max_metadata_columns`` 256: metadata keys one ECG may carry and
  user metadata columns the store may hold, so that no request grows the schema without end; an
  item past them is refused with reason ``too_many_metadata_keys`` / ``too_many_columns``. Real
  sources carry about 30 fields (``index/schema.py`` says which and why these figures).

Tokens: ``--token-file`` holds one ``ROLE TOKEN`` per line (ROLE is ``read`` or ``write``; blank
lines and ``#`` comments ignored); ``ECG_ATLAS_READ_TOKEN`` / ``ECG_ATLAS_WRITE_TOKEN`` add one
token each. A write token may do everything a read token may.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from ecg_atlas.devices import parse_device
from ecg_atlas.embedder.weights import DEFAULT_ENCODER
from ecg_atlas.errors import AtlasError, DeviceError
from ecg_atlas.index.schema import MAX_METADATA_COLUMNS, MAX_METADATA_KEYS
from ecg_atlas.limits import MAX_MESSAGE_BYTES, SERVER_MAX_K

ROLES = ("read", "write")
READ_TOKEN_ENV = "ECG_ATLAS_READ_TOKEN"
WRITE_TOKEN_ENV = "ECG_ATLAS_WRITE_TOKEN"
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class ConfigError(AtlasError):
    """Server settings that cannot work together (e.g. a public bind without TLS)."""


DEFAULT_CPU_BATCH_SEGMENTS = 8
DEFAULT_GPU_BATCH_SEGMENTS = 256


def default_batch_segments(device_type: str) -> int:
    return DEFAULT_GPU_BATCH_SEGMENTS if device_type == "cuda" else DEFAULT_CPU_BATCH_SEGMENTS


#: auto preprocessing processes on a GPU: at most this many (module docstring)
MAX_AUTO_PREPROCESS_PROCESSES = 8


def default_preprocess_processes(device_type: str, cores: int) -> int:
    """Preprocessing worker processes: on a GPU all cores but two, at most 8; on a CPU none
    (threads), as the module docstring explains."""
    return min(MAX_AUTO_PREPROCESS_PROCESSES, max(1, cores - 2)) if device_type == "cuda" else 0


def default_encoder_workers(device_type: str, cores: int, fast: str | None = None) -> int:
    """Encoder worker threads: 2 on a GPU and on a CPU with at least 2 cores (config docstring),
    else 1; 1 with the compiled path."""
    if fast == "compile":
        return 1
    return 2 if device_type == "cuda" or cores >= 2 else 1


@dataclass
class ServerConfig:
    store: Path
    checkpoint: str = DEFAULT_ENCODER
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: str = "auto"  # auto: bfloat16 on a GPU, float32 on a CPU
    fast: str | None = None  # opt-in faster CPU inference: "int8" | "compile" (Encoder fast modes)
    index_kind: str | None = None
    index_memory: int | None = None  # bytes an ivfpq index may take (None: its default code size)
    host: str = "127.0.0.1"
    port: int = 50051
    # batching
    max_batch_segments: int | None = None  # None: 8 on a CPU, 256 on a GPU (resolved at load)
    max_queue_delay_ms: float = 5.0
    max_queue_segments: int = 4096
    encoder_workers: int | None = None  # None: 2 on a CPU with 2+ cores, else 1 (resolved at load)
    preprocess_workers: int = 2
    preprocess_processes: int | None = None  # None: auto, processes on a GPU only (resolved at load)
    # limits
    max_concurrent_rpcs: int = 64
    max_receive_message_bytes: int = MAX_MESSAGE_BYTES
    max_send_message_bytes: int = MAX_MESSAGE_BYTES
    max_ingest_in_flight: int = 32
    max_metadata_keys: int = MAX_METADATA_KEYS
    max_metadata_columns: int = MAX_METADATA_COLUMNS
    max_k: int = SERVER_MAX_K  # hits one Search may ask for (ecg_atlas/limits.py)
    min_leads: int = 8
    max_ecg_duration_s: float = 600.0
    grace_s: float = 30.0
    # where stored ECGs' signals come from later (Explain, exemplar grids, baselines): the store's
    # own copy (default), else files under these operator-named folders (analysis/signals.py)
    keep_signals: bool = True
    data_roots: tuple[Path, ...] = ()
    # security
    token_file: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    insecure: bool = False
    tokens: dict[str, str] = field(default_factory=dict, repr=False)  # token -> role, filled by load_tokens

    @property
    def loopback(self) -> bool:
        return self.host in LOOPBACK_HOSTS

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    def load_tokens(self, environ: dict[str, str] | None = None) -> None:
        """Read the token file and the token env vars into ``tokens``."""
        env = os.environ if environ is None else environ
        tokens: dict[str, str] = {}
        if self.token_file is not None:
            tokens.update(read_token_file(self.token_file))
        for role, name in (("read", READ_TOKEN_ENV), ("write", WRITE_TOKEN_ENV)):
            if env.get(name):
                tokens[env[name]] = role
        self.tokens = tokens

    def validate(self) -> None:
        """Refuse settings that would expose patient data or cannot run."""
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both --tls-cert and --tls-key")
        if self.tls_client_ca is not None and not self.tls:
            raise ConfigError("--tls-client-ca (client certificates) needs --tls-cert and --tls-key")
        for path in (self.tls_cert, self.tls_key, self.tls_client_ca):
            if path is not None and not Path(path).is_file():
                raise ConfigError(f"TLS file not found: {path}")
        if not self.loopback and not self.insecure:
            missing = [what for what, ok in (("TLS (--tls-cert/--tls-key)", self.tls),
                                              ("a token (--token-file or $ECG_ATLAS_*_TOKEN)", bool(self.tokens)))
                       if not ok]
            if missing:
                raise ConfigError(
                    f"refusing to listen on {self.host} (not loopback) without {' and '.join(missing)}: "
                    f"ECGs are patient data. Add them, bind 127.0.0.1, or pass --insecure to accept the risk")
        try:
            parse_device(self.device)
        except DeviceError as exc:
            raise ConfigError(f"--device: {exc}") from None
        for root in self.data_roots:
            if not Path(root).is_dir():
                raise ConfigError(f"--data-root {root} is not a folder")
        for name in ("max_batch_segments", "max_queue_segments", "max_concurrent_rpcs", "max_ingest_in_flight",
                     "max_k", "preprocess_workers", "encoder_workers", "max_metadata_keys", "max_metadata_columns"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.preprocess_processes is not None and self.preprocess_processes < 0:
            raise ConfigError(f"preprocess_processes must be 0 (threads) or more, got {self.preprocess_processes}")
        if self.max_queue_segments < (self.max_batch_segments or DEFAULT_GPU_BATCH_SEGMENTS):
            raise ConfigError("max_queue_segments must be at least max_batch_segments")


def read_token_file(path: Path) -> dict[str, str]:
    """token -> role from a file of ``ROLE TOKEN`` lines."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read token file {path}: {exc.strerror}") from exc
    tokens: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or parts[0] not in ROLES:
            # the line may hold a secret: name the line, never echo it
            raise ConfigError(f"{path} line {number}: expected 'read TOKEN' or 'write TOKEN'")
        tokens[parts[1]] = parts[0]
    return tokens
