"""The one wait-for-completion loop of the serial drivers, on an injectable clock.

GRBL (`G4 P0` / `$H` answered by `ok`), APT (MOVE_COMPLETED / MOVE_HOMED) and
Zaber (IDLE in the reply) all wait the same way: ask for status every
`poll_s`, read what comes, finish when a message says so, raise when the
controller goes silent for longer than the reply timeout or the whole wait
outlasts its deadline. The clock is a parameter so tests drive time instead of
racing it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from hdme_focus.drivers.base import Clock

M = TypeVar("M")


def await_completion(
    *,
    clock: Clock,
    timeout_s: float,
    poll_s: float,
    silence_s: float,
    poll: Callable[[], None],
    read: Callable[[float], M | None],
    done: Callable[[M], bool],
    timed_out: Callable[[], BaseException],
    silent: Callable[[], BaseException],
) -> None:
    """Poll and read until `done(message)`; raise `timed_out()` / `silent()` as they happen.

    `read(wait_s)` returns one message or None after at most wait_s; `done` may
    raise (an alarm, a fault flag). `timed_out` is called before raising so the
    caller can stop the stage there.
    """
    start = clock.monotonic()
    deadline = start + timeout_s
    last_rx = start
    next_poll = start
    while True:
        now = clock.monotonic()
        if now >= deadline:
            raise timed_out()
        if now - last_rx > silence_s:
            raise silent()
        if now >= next_poll:
            poll()
            next_poll = now + poll_s
        message = read(max(0.0, min(next_poll, deadline) - now))
        if message is None:
            continue
        last_rx = clock.monotonic()
        if done(message):
            return
