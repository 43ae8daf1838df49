"""The store's reader / writer lock: many searches at once, one write at a time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadWriteLock:
    """Many readers or one writer; a waiting writer holds back new readers (no starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self.writer_thread: int | None = None

    @contextmanager
    def read(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
            self.writer_thread = threading.get_ident()
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self.writer_thread = None
                self._cond.notify_all()

    def held_by_this_thread(self) -> bool:
        """Whether the calling thread holds the write lock."""
        return self.writer_thread == threading.get_ident()
