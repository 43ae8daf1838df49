"""Progress of a long step: a bar on a terminal, periodic plain lines when stderr is not one.

A piped or logged run (``ecg-atlas cluster ... 2> run.log``, CI, ``nohup``) gets a line such as
``ecg-atlas cluster: umap-map 55% (1 min 12 s)`` when the stage changes and at most every
``$ECG_ATLAS_PROGRESS_EVERY_S`` seconds (default 10; ``0``: at every step; ``off``: no lines),
and a closing line when it printed any. Lines carry counts and stages only: never ids, names or
paths. On a terminal it is a tqdm bar, as before.

``Progress`` follows a count (``update(n)``) or a percentage (``set(percent, stage)``); ``waiting``
covers a step that reports nothing while it runs (a unary RPC): it says the step is still running.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from contextlib import contextmanager

EVERY_S_ENV = "ECG_ATLAS_PROGRESS_EVERY_S"
DEFAULT_EVERY_S = 10.0


def every_s() -> float | None:
    """Seconds between progress lines off a terminal (None: no lines), from $ECG_ATLAS_PROGRESS_EVERY_S."""
    text = os.environ.get(EVERY_S_ENV, "").strip().lower()
    if not text:
        return DEFAULT_EVERY_S
    if text in ("off", "none", "no"):
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        return DEFAULT_EVERY_S


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def elapsed_text(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s"
    return f"{minutes // 60} h {minutes % 60} min"


class Progress:
    """A bar on a terminal, periodic lines elsewhere; use as a context manager.

    what: the prefix of every line (``ecg-atlas cluster``); total: the count the step goes to
    (None: unknown); unit: what is counted (``ECGs``), or ``%`` for a step that reports percent.
    stream: stderr by default; interval_s: seconds between lines off a terminal (default: from
    $ECG_ATLAS_PROGRESS_EVERY_S; None: no lines); terminal: whether to draw a bar (default: whether
    `stream` is a terminal).
    """

    def __init__(self, what: str, total: float | None = None, unit: str = "", *, stream=None,
                 interval_s: float | None = ..., terminal: bool | None = None) -> None:
        self.what, self.total, self.unit = what, total, unit
        self.stream = stream if stream is not None else sys.stderr
        self.terminal = _is_terminal(self.stream) if terminal is None else terminal
        self.interval_s = every_s() if interval_s is ... else interval_s
        self.done: float = 0
        self.stage: str | None = None
        self.started = time.perf_counter()
        self._last_line: float | None = None
        self._lines = 0
        self._last_state: tuple | None = None
        self._bar = None
        if self.terminal:
            from tqdm import tqdm

            fmt = ("{desc}: {n:.0f}% |{bar}| [{elapsed}]" if unit == "%"
                   else "{desc} [{elapsed}]" if not unit else None)
            self._bar = tqdm(total=total, unit=unit or "it", desc=what, file=self.stream, dynamic_ncols=True,
                             **({"bar_format": fmt} if fmt else {}))

    # -- feeding it

    def update(self, n: float = 1) -> None:
        self.set(self.done + n)

    def set(self, done: float, stage: str | None = None) -> None:
        """Move to `done` (a count, or percent with unit ``%``); a new `stage` is always reported."""
        new_stage = stage is not None and stage != self.stage
        if stage is not None:
            self.stage = stage
        step = done - self.done
        self.done = done
        if self._bar is not None:
            if new_stage:
                self._bar.set_description(f"{self.what}: {stage}")
            self._bar.update(int(step) if float(step).is_integer() else step)  # "3/3", not "3.0/3"
            return
        if self.interval_s is None:
            return
        now = time.perf_counter()
        if new_stage or now - (self._last_line or self.started) >= self.interval_s:
            self._line(now)

    def note(self, text: str) -> None:
        """A line of its own (e.g. an epoch's result), above the bar on a terminal."""
        if self._bar is not None:
            self._bar.write(f"{self.what}: {text}", file=self.stream)
        else:
            print(f"{self.what}: {text}", file=self.stream, flush=True)

    # -- lines

    def describe(self, now: float | None = None) -> str:
        now = time.perf_counter() if now is None else now
        took = now - self.started
        parts = [self.stage] if self.stage else []
        if self.unit == "%":
            parts.append(f"{self.done:.0f}%")
        elif self.total:
            parts.append(f"{self.done:.0f}/{self.total:.0f} {self.unit}, {100 * self.done / self.total:.0f}%")
        elif self.unit:
            parts.append(f"{self.done:.0f} {self.unit}")
        rate = f", {self.done / took:.1f} {self.unit}/s" if self.unit not in ("", "%") and took > 0 else ""
        return f"{self.what}: {' '.join(parts) or 'working'} ({elapsed_text(took)}{rate})"

    def _line(self, now: float) -> None:
        print(self.describe(now), file=self.stream, flush=True)
        self._last_line = now
        self._lines += 1
        self._last_state = (self.stage, self.done)

    def close(self, *, say_done: bool = False) -> None:
        """End the bar, or (off a terminal, when it printed lines) print a last line saying where
        it ended, unless the line before said so already (`say_done`: print it anyway)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._lines and self.interval_s is not None and (say_done or
                                                              self._last_state != (self.stage, self.done)):
            self.stage = "done"  # the last line, unless the one before already said where it ended
            self._line(time.perf_counter())
        self._lines = 0

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


@contextmanager
def waiting(what: str, *, stream=None, interval_s: float | None = ..., terminal: bool | None = None):
    """While the block runs (a step that reports nothing, e.g. a unary RPC), say it is still
    running: an elapsed-time bar on a terminal, a line every interval elsewhere."""
    progress = Progress(what, None, "", stream=stream, interval_s=interval_s, terminal=terminal)
    stop = threading.Event()
    # off a terminal: a line now (a log shows when the wait began), then one every interval
    tick = 1.0 if progress.terminal else max(1.0, progress.interval_s or 0.0)
    if not progress.terminal and progress.interval_s is not None:
        progress.set(0, "started")

    def beat() -> None:
        while not stop.wait(tick):
            if progress._bar is not None:
                progress._bar.refresh()
            else:
                progress.stage = "still running"
                progress._line(time.perf_counter())

    thread = threading.Thread(target=beat, name="progress", daemon=True)
    if progress.terminal or progress.interval_s is not None:
        thread.start()
    try:
        yield progress
    finally:
        stop.set()
        if thread.is_alive():
            thread.join()
        progress.close(say_done=True)
