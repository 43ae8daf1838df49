"""Ordered read-ahead on worker threads, for reading and preprocessing ECG files.

Torch-free on purpose: the ``ingest`` client uses it and should not load torch.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetch(items: Iterable[T], work: Callable[[T], R], *, workers: int = 2,
             depth: int = 16) -> Iterator[tuple[T, R | Exception]]:
    """``(item, work(item))`` in input order, computed ``depth`` items ahead on worker threads.

    Reading and preprocessing (NumPy, wfdb: the GIL is released in their heavy parts) overlap with
    inference. An exception is returned in place of the result so one bad file does not stop a run.
    """

    def guarded(item: T) -> R | Exception:
        try:
            return work(item)
        except Exception as exc:  # handed back to the caller, per item
            return exc

    window: deque[tuple[T, Future]] = deque()
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for item in items:
            window.append((item, pool.submit(guarded, item)))
            if len(window) >= depth:
                head, future = window.popleft()
                yield head, future.result()
        while window:
            head, future = window.popleft()
            yield head, future.result()
