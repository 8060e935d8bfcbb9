"""What a training process shows while it runs, and how it learns that it must stop.

``Progress`` prints a line every few seconds for the person waiting (the metrics file is the record);
``PreemptionFlag`` is set by SIGTERM or SIGUSR1, which is how SLURM preempts a job or warns before its
time limit.
"""

from __future__ import annotations

import math
import signal
import sys
import time
from typing import Any


class PreemptionFlag:
    """Set by SIGTERM/SIGUSR1 (how SLURM preempts or warns before a time limit)."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGUSR1):
            self._previous[signum] = signal.signal(signum, self._handle)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, _frame: Any) -> None:
        self.signal_name = signal.Signals(signum).name

    @property
    def raised(self) -> bool:
        return self.signal_name is not None


class Progress:
    """A progress line every few seconds for the person waiting; the metrics file is the record."""

    def __init__(self, total_tokens: int, interval_seconds: float, quiet: bool, enabled: bool) -> None:
        self.total_tokens = total_tokens
        self.interval_seconds = interval_seconds
        self.enabled = enabled and not quiet
        self._last_print = time.monotonic()
        self._last_tokens = 0
        self._last_time = time.monotonic()

    def update(self, step: int, tokens: int, loss: float, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last_print < self.interval_seconds:
            return
        rate = (tokens - self._last_tokens) / max(now - self._last_time, 1e-9)
        remaining = (self.total_tokens - tokens) / rate if rate > 0 else float("inf")
        print(
            f"step {step} | tokens {tokens:,}/{self.total_tokens:,} ({100 * tokens / self.total_tokens:.0f}%)"
            f" | loss {loss:.5f} | {rate:,.0f} tokens/s | left {_format_seconds(remaining)}",
            file=sys.stderr,
            flush=True,
        )
        self._last_print = now
        self._last_time = now
        self._last_tokens = tokens

    def message(self, text: str) -> None:
        if self.enabled:
            print(text, file=sys.stderr, flush=True)


def _format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"
