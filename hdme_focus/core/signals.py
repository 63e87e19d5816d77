"""SIGTERM and SIGHUP end a command the way Ctrl-C does: as an exception in the main thread.

`timeout`, a closed SSH session or a job scheduler send SIGTERM or SIGHUP, whose
default action kills the process on the spot: no `finally` runs, so a stage is
left moving and a sweep's manifest says `running`. Inside `signals_as_exceptions`
the signal raises `InterruptedBySignal` instead, so every `finally` and
`__exit__` (SafeStage's stop, the sweep's manifest) runs as for KeyboardInterrupt.
A second signal while that cleanup runs is remembered, not raised, so it cannot
cut the cleanup short. The previous handlers are restored on exit.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

from hdme_focus.core.errors import InterruptedBySignal

#: The signals a terminal, `timeout` or a scheduler sends to end a job (SIGINT stays Ctrl-C).
STOP_SIGNALS: tuple[signal.Signals, ...] = tuple(
    s for s in (getattr(signal, "SIGTERM", None), getattr(signal, "SIGHUP", None)) if s is not None
)


class _Latch:
    """Raise on the first signal only; later ones are recorded while cleanup runs."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if len(self.received) == 1:
            raise InterruptedBySignal(signum, signal.Signals(signum).name)


@contextlib.contextmanager
def signals_as_exceptions(
    signals: tuple[signal.Signals, ...] = STOP_SIGNALS,
) -> Iterator[list[int]]:
    """Turn `signals` into `InterruptedBySignal` in the main thread; yields the received list.

    Outside the main thread Python cannot install handlers; then nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield []
        return
    latch = _Latch()
    previous = {s: signal.signal(s, latch) for s in signals}
    try:
        yield latch.received
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
