"""What a running service holds: the encoder behind its batching queue, the store, where stored
signals come from, the preprocessing (on threads, or on worker processes) and the thread pools.
``load()`` builds them from a ``ServerConfig`` (which it reads, never rewrites: the values it
resolves, such as the batch size, live here)."""

from __future__ import annotations

import logging
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor

from .config import ServerConfig, default_batch_segments, default_encoder_workers, default_preprocess_processes

log = logging.getLogger(__name__)

#: Analysis calls (TrainProbe, Predict, Cluster, Explain) that run at once; more wait their turn.
ANALYSIS_WORKERS = 2


class Runtime:
    def __init__(self, config: ServerConfig):
        self.config = config
        self.ready = threading.Event()
        self.encoder = None
        self.batcher = None  # embedder.batching.BatchingEncoder
        self.store = None  # index.Store
        self.signals = None  # analysis.signals.SignalSource: stored ECGs' samples, never a client's path
        self.identity = None  # index.EncoderIdentity of the encoder (the store's)
        self.notice = ""  # the encoder's licence / provenance notice, announced at start-up
        self.max_batch_segments = 0
        self.encoder_workers = 0
        self.encoder_threads = 0  # torch threads per encoder worker (CPU)
        self.preprocessing = None  # prepare_pool.Preprocessing: the encoder's pipeline with the server's limits
        self.prepare_pool = None  # prepare_pool.PreparePool when ECGs are preprocessed on worker processes
        self.preprocess = None  # ThreadPoolExecutor running Ingest's preprocess-and-submit steps
        # Long analysis work runs here, off the RPC threads' hot path and never on an encoder worker.
        self.analysis = ThreadPoolExecutor(ANALYSIS_WORKERS, thread_name_prefix="analysis")

    def load(self) -> None:
        import torch

        from ecg_atlas.analysis.signals import SignalSource
        from ecg_atlas.embedder.batching import BatchingEncoder
        from ecg_atlas.embedder.preprocessing import MissingLeadsWarning
        from ecg_atlas.embedder.resolver import load_encoder
        from ecg_atlas.errors import EncoderMismatchError
        from ecg_atlas.index import EncoderIdentity, Store

        from .prepare_pool import PreparePool, Preprocessing

        # The report of every ECG lists its zero-filled leads; a process-wide warning adds nothing.
        warnings.filterwarnings("ignore", category=MissingLeadsWarning)
        cfg = self.config
        self.encoder = load_encoder(cfg.checkpoint, device=cfg.device, dtype=cfg.dtype, fast=cfg.fast)
        self.notice = self.encoder.notice
        if self.notice:
            log.info("encoder notice: %s", self.notice)  # serve and quickstart print it as a note
        self.identity = EncoderIdentity(self.encoder.model_id, self.encoder.checkpoint_sha256,
                                        self.encoder.contract.preprocessing_version, self.encoder.dim)
        try:
            self.store = Store.open(cfg.store, identity=self.identity, index_kind=cfg.index_kind, device=cfg.device,
                                    index_memory=cfg.index_memory, max_metadata_keys=cfg.max_metadata_keys,
                                    max_metadata_columns=cfg.max_metadata_columns)
        except EncoderMismatchError as exc:
            raise EncoderMismatchError(f"{exc}{_bundled_hint(cfg.store)}") from None
        self.store.record_encoder_contract(self.encoder.contract.to_dict())
        self.signals = SignalSource(self.store, cfg.data_roots)
        device = self.encoder.device.type
        self.max_batch_segments = cfg.max_batch_segments or default_batch_segments(device)
        cores = torch.get_num_threads()
        self.encoder_workers = cfg.encoder_workers or default_encoder_workers(device, cores, cfg.fast)
        if device == "cpu":
            # The workers share the cores: torch's intra-op thread count is process-wide, and each
            # worker's ops run on a team of that many threads.
            self.encoder_threads = max(1, cores // self.encoder_workers)
            torch.set_num_threads(self.encoder_threads)
        self.preprocessing = Preprocessing(self.encoder.preprocessing, cfg.min_leads, cfg.max_ecg_duration_s)
        processes = cfg.preprocess_processes
        if processes is None:
            processes = default_preprocess_processes(device, cores)
        threads = cfg.preprocess_workers
        if processes:
            self.prepare_pool = PreparePool(self.preprocessing, processes)
            self.prepare_pool.warm_up()
            # the threads only hand ECGs to the processes and wait: two per process keep each busy
            threads = max(threads, 2 * processes)
            log.info("preprocessing on %d worker processes (%s)", processes, self.prepare_pool.prefix)
        self.preprocess = ThreadPoolExecutor(threads, thread_name_prefix="preprocess")
        self.batcher = BatchingEncoder(self.encoder, max_batch_segments=self.max_batch_segments,
                                       max_queue_delay_ms=cfg.max_queue_delay_ms,
                                       max_queue_segments=cfg.max_queue_segments,
                                       workers=self.encoder_workers).start()
        self.batcher.warm_up()
        self.store.warm_up()
        self.ready.set()

    def close(self) -> None:
        self.ready.clear()
        if self.preprocess is not None:
            self.preprocess.shutdown(wait=True)
        if self.prepare_pool is not None:
            self.prepare_pool.close()
        self.analysis.shutdown(wait=True)
        if self.batcher is not None:
            self.batcher.stop()
        if self.store is not None:
            self.store.close()


def _bundled_hint(store_path) -> str:
    """For a store made with an earlier bundled release: the --checkpoint that serves it."""
    from ecg_atlas.embedder.weights import release_for_sha256
    from ecg_atlas.index import Store

    with Store.open(store_path, create=False, read_only=True, with_index=False) as store:
        identity = store.info().identity
    release = release_for_sha256(identity.checkpoint_sha256 if identity else None)
    if release is None:
        return ""
    return f". It was made with the bundled {release.name}: serve it with --checkpoint {release.spec}"
