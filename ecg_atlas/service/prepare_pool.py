"""Decode and preprocess ECG messages on worker processes, off the encoder's GIL.

The service turns every ECG message into model-ready segments (``Preprocessing.message``). On
threads that NumPy work holds the GIL in part, and on a GPU it competes with the encoder workers'
Python dispatch for it; ``PreparePool`` runs it on ``processes`` worker processes instead
(``serve --preprocess-processes``; ``config.default_preprocess_processes`` says when).

What crosses the process boundary:

* once, when a worker starts: the ``Preprocessing`` — the encoder's module-level pipeline
  function (``BaseEncoder.preprocessing``, pickled by name: no network, no torch in a worker) and
  the server's limits;
* parent → worker, per ECG: the message's serialized bytes (through the pool's pipe) and the name
  of a shared-memory block, ``<prefix><n>``, chosen by the parent;
* worker → parent: the segments, in that block (created by the worker at their exact size: a
  10-s ECG's are 240 kB, so no fixed arena has to fit the largest 600-s ECG in ``/dev/shm``), and
  a small pickle: the block's shape and dtype, the ``PreprocessReport`` and a ``RecordingHeader``
  (sampling rate, lead names, duration: what Ingest stores beside the vectors; the raw signal it
  keeps comes from the message the parent still holds). The parent copies the segments out
  (that copy is what the batching queue takes), then closes and unlinks the block.

An error in a worker comes back as the same exception (``InvalidECGError`` with its reason,
details and message), so a bad ECG is answered exactly as on threads. A worker that dies (killed,
out of memory) breaks the executor: every ECG it had in flight fails with
``PreprocessCrashedError`` — the executor cannot say which one the dead worker held — its blocks
are unlinked by name, and the next ECG gets a fresh executor. ``close()`` ends the workers and
unlinks any block still named. Workers come from a forkserver (``spawn`` where there is none): the
server has threads, so plain ``fork`` is unsafe; the forkserver has this module preloaded, so a
replacement worker starts in milliseconds.
"""

from __future__ import annotations

import itertools
import logging
import multiprocessing
import os
import signal
import threading
import warnings
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from multiprocessing.shared_memory import SharedMemory

import numpy as np

from ecg_atlas import wire
from ecg_atlas.embedder.batching import EncoderStoppedError
from ecg_atlas.embedder.preprocessing import MissingLeadsWarning, Prepared
from ecg_atlas.errors import AtlasError, InvalidECGError
from ecg_atlas.v1 import atlas_pb2 as pb

log = logging.getLogger(__name__)


class PreprocessCrashedError(AtlasError):
    """The worker process preprocessing an ECG died; the pool was restarted. Send it again."""

    reason = "preprocess_crashed"


@dataclass(frozen=True)
class RecordingHeader:
    """What the service keeps of a decoded ECG besides its segments."""

    fs: float
    lead_names: tuple[str, ...]
    duration_s: float

    @classmethod
    def of(cls, recording) -> "RecordingHeader":
        return cls(recording.fs, tuple(recording.lead_names), recording.duration_s)


@dataclass(frozen=True)
class Preprocessing:
    """An encoder's input pipeline with the server's limits: all a worker process needs."""

    prepare: Callable  # the encoder's module-level pipeline (BaseEncoder.preprocessing)
    min_leads: int
    max_duration_s: float

    def recording(self, recording) -> Prepared:
        return self.prepare(recording, min_leads=self.min_leads, max_duration_s=self.max_duration_s)

    def message(self, ecg: pb.ECG):
        """(Recording, Prepared) of an ECG message; InvalidECGError says what is wrong with it."""
        if not ecg.ByteSize():
            raise InvalidECGError("no ECG was sent", reason="bad_signal")
        recording = wire.ecg_from_proto(ecg, max_duration_s=self.max_duration_s)
        return recording, self.recording(recording)


def start_method() -> str:
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class PreparePool:
    """``prepare(ecg)`` → (RecordingHeader, Prepared), computed on ``processes`` worker processes."""

    def __init__(self, preprocessing: Preprocessing, processes: int):
        if processes < 1:
            raise ValueError("processes must be at least 1")
        self.preprocessing = preprocessing
        self.processes = processes
        self._context = multiprocessing.get_context(start_method())
        if self._context.get_start_method() == "forkserver":
            self._context.set_forkserver_preload([__name__])
        #: every block this pool names starts with this (the server's pid: two servers never clash)
        self.prefix = f"ecg-atlas-{os.getpid()}-{id(self):x}-"
        self._serial = itertools.count()
        self._named: set[str] = set()  # blocks a worker may have created and the parent not yet unlinked
        self._lock = threading.Lock()
        self._closed = False
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(self.processes, mp_context=self._context, initializer=_start_worker,
                                   initargs=(self.preprocessing,))

    def warm_up(self) -> None:
        """Start the workers now (and fail at start-up, not on the first ECG, if they cannot)."""
        futures = [self._executor.submit(os.getpid) for _ in range(self.processes)]
        for future in futures:
            future.result()

    def prepare(self, ecg: pb.ECG) -> tuple[RecordingHeader, Prepared]:
        block = f"{self.prefix}{next(self._serial)}"
        self._named.add(block)
        try:
            header, report, shape, dtype = self._run(ecg.SerializeToString(), block)
            return header, Prepared(_take(block, shape, dtype), report)
        finally:
            self._named.discard(block)

    def _run(self, message: bytes, block: str):
        executor = self._executor
        try:
            future = executor.submit(_prepare_in_worker, message, block)
        except BrokenProcessPool:  # it broke before this ECG reached it: nothing of it was lost
            future = self._replace(executor).submit(_prepare_in_worker, message, block)
        except RuntimeError:  # shut down
            raise EncoderStoppedError("the server is shutting down; retry on another server") from None
        try:
            return future.result()
        except BrokenProcessPool:
            _unlink(block)
            self._replace(executor)
            raise PreprocessCrashedError(
                "the process preprocessing this ECG stopped unexpectedly (killed or out of memory); the "
                "server started a new one: send this ECG again") from None

    def _replace(self, broken: ProcessPoolExecutor) -> ProcessPoolExecutor:
        """A working executor in place of ``broken`` (once, whichever caller sees it first)."""
        with self._lock:
            if self._closed:
                raise EncoderStoppedError("the server is shutting down; retry on another server")
            if self._executor is broken:
                log.warning("a preprocessing process stopped unexpectedly; starting %d new ones", self.processes)
                broken.shutdown(wait=False, cancel_futures=True)
                self._executor = self._new_executor()
            return self._executor

    def close(self) -> None:
        """End the workers (what they are preprocessing finishes first); unlink every block left."""
        with self._lock:
            self._closed = True
            executor = self._executor
        executor.shutdown(wait=True, cancel_futures=True)
        for block in list(self._named):
            _unlink(block)


def _take(block: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """The segments a worker left in ``block``, copied out; the block is unlinked."""
    memory = SharedMemory(block)
    try:
        return np.array(np.ndarray(shape, np.dtype(dtype), buffer=memory.buf))
    finally:
        memory.close()
        memory.unlink()


def _unlink(block: str) -> None:
    try:
        memory = SharedMemory(block)
    except FileNotFoundError:
        return
    memory.close()
    memory.unlink()


# ---- in the worker processes ------------------------------------------------------------------

_preprocessing: Preprocessing | None = None


def _start_worker(preprocessing: Preprocessing) -> None:
    global _preprocessing
    _preprocessing = preprocessing
    # Ctrl-C in serve's terminal reaches the whole process group; the parent decides when workers end.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # as in the server: each ECG's report lists its zero-filled leads
    warnings.filterwarnings("ignore", category=MissingLeadsWarning)


def _prepare_in_worker(message: bytes, block: str):
    recording, prepared = _preprocessing.message(pb.ECG.FromString(message))
    segments = np.ascontiguousarray(prepared.segments)
    memory = SharedMemory(block, create=True, size=max(1, segments.nbytes))
    try:
        memory.buf[:segments.nbytes] = segments.reshape(-1).view(np.uint8)
    except BaseException:
        memory.unlink()
        raise
    finally:
        memory.close()
    return RecordingHeader.of(recording), prepared.report, segments.shape, segments.dtype.str
