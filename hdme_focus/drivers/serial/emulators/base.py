"""What every emulated controller shares: a real pseudo-terminal, an axis, faults.

The driver under test opens `emulator.port` (a /dev/pts/N path) with pyserial,
exactly as it opens /dev/ttyUSB0 on hardware. A daemon thread answers on the
master side; `close()` (or the context manager) ends the thread and closes both
file descriptors, so tests never hang on a forgotten emulator.
"""

from __future__ import annotations

import contextlib
import os
import select
import threading
import time
import tty
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Self

GARBLE_XOR = 0xA5  # flips every ASCII byte into the non-ASCII range; keeps binary headers invalid


@dataclass
class Faults:
    """Faults to inject; change them at any time, from any thread.

    no_reply, reply_delay_s and garble act on every reply until changed;
    error_reply, alarm_after_s and disconnect_after_s fire once.
    """

    no_reply: bool = False  # the controller executes commands but sends nothing back
    reply_delay_s: float = 0.0  # every reply is sent this late
    garble: bool = False  # replies arrive corrupted (line endings kept)
    error_reply: int | str | None = None  # next command is answered with this error...
    error_on: str = ""  # ...if it starts with this (G-code line, Zaber command, APT message name)
    alarm_after_s: float | None = None  # next move faults (alarm / stall) this long after it starts
    limit_after_s: float | None = (
        None  # next move runs onto a limit switch this long after it starts
    )
    disconnect_after_s: float | None = None  # port closes this long into the next move
    split_replies: bool = False  # every reply reaches the host in two reads, 20 ms apart
    lost_resets: int = 0  # this many resets (GRBL 0x18) are lost on the way to the controller


class EmulatedAxis:
    """One linear axis: position, constant speed, travel limits, homed flag.

    Motion is computed from the clock when asked, so no thread has to step it.
    `clock` (seconds) is replaceable so a test can hold time still.
    """

    def __init__(
        self,
        position_mm: float = 1.0,
        speed_mm_s: float = 5.0,
        min_mm: float = -5.0,
        max_mm: float = 25.0,
        homed: bool = False,
        home_mm: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.clock = clock
        self.speed_mm_s = float(speed_mm_s)
        self.min_mm = float(min_mm)
        self.max_mm = float(max_mm)
        self.homed = homed
        self.home_mm = float(home_mm)
        self._start_mm = float(position_mm)
        self._target_mm = float(position_mm)
        self._t0 = clock()
        self._v = self.speed_mm_s
        self.homing = False

    def _now_mm(self, now: float) -> float:
        dist = self._target_mm - self._start_mm
        done = self._v * max(0.0, now - self._t0)
        if done >= abs(dist):
            return self._target_mm
        return self._start_mm + done * (1 if dist > 0 else -1)

    @property
    def position_mm(self) -> float:
        return self._now_mm(self.clock())

    @property
    def moving(self) -> bool:
        return self.position_mm != self._target_mm

    @property
    def target_mm(self) -> float:
        return self._target_mm

    def move_to(self, target_mm: float, speed_mm_s: float | None = None) -> None:
        now = self.clock()
        self._start_mm = self._now_mm(now)
        self._target_mm = min(self.max_mm, max(self.min_mm, float(target_mm)))
        self._v = float(speed_mm_s or self.speed_mm_s)
        self._t0 = now

    def stop(self) -> None:
        """Halt where the axis is now (deceleration is taken as instantaneous)."""
        pos = self.position_mm
        self._start_mm = self._target_mm = pos
        self.homing = False

    def start_home(self) -> None:
        self.homing = True
        self.homed = False
        self.move_to(self.home_mm)

    def finish_home_if_done(self) -> bool:
        """True exactly once, when a homing run reaches the switch."""
        if self.homing and not self.moving:
            self.homing = False
            self.homed = True
            return True
        return False


class PtyEmulator:
    """A controller that answers on a pseudo-terminal from a daemon thread.

    Subclasses implement `on_bytes` (what arrived) and `tick` (time-driven
    events such as a move completing) and reply with `send`. Everything the
    host sent is kept in `received` for assertions.
    """

    name = "emulator"

    def __init__(self, axis: EmulatedAxis | None = None, faults: Faults | None = None) -> None:
        self.axis = axis or EmulatedAxis()
        self.faults = faults or Faults()
        self.received = bytearray()
        self.lock = threading.RLock()
        self._master, self._slave = os.openpty()
        tty.setraw(self._slave)
        os.set_blocking(self._master, False)
        self.port = os.ttyname(self._slave)
        self._outbox: list[tuple[float, bytes]] = []
        self._stop = threading.Event()
        self.gone = False
        self._move_faults: list[tuple[float, str]] = []
        self._thread = threading.Thread(target=self._run, name=f"{self.name}-{self.port}")
        self._thread.daemon = True

    # ------------------------------------------------------------- life cycle
    def start(self) -> Self:
        self._thread.start()
        return self

    def __enter__(self) -> Self:
        return self.start() if not self._thread.is_alive() else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout=2.0)
        with self.lock:
            self._close_fds()

    def _close_fds(self) -> None:
        for fd in (self._master, self._slave):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._master = self._slave = -1

    def disconnect(self) -> None:
        """The device vanishes: the port closes under the host, motion ends."""
        with self.lock:
            self.axis.stop()
            self.gone = True
            self._outbox.clear()
            self._close_fds()
        self._stop.set()

    @property
    def moving(self) -> bool:
        with self.lock:
            return not self.gone and self.axis.moving

    def received_text(self) -> str:
        with self.lock:
            return self.received.decode("latin-1")

    # ------------------------------------------------------------- replies
    def send(self, data: bytes) -> None:
        """Queue a reply, after the faults had their say."""
        f = self.faults
        if f.no_reply or self.gone:
            return
        if f.garble:
            body = data.rstrip(b"\r\n")
            data = bytes(b ^ GARBLE_XOR for b in body) + data[len(body) :]
        at = time.monotonic() + f.reply_delay_s
        with self.lock:
            if f.split_replies and len(data) > 1:
                half = len(data) // 2
                self._outbox.append((at, data[:half]))
                self._outbox.append((at + 0.02, data[half:]))
            else:
                self._outbox.append((at, data))

    def take_error(self, command: str) -> int | str | None:
        """The one-shot error reply, if armed for this command (then consumed)."""
        with self.lock:
            err = self.faults.error_reply
            if err is None or not command.startswith(self.faults.error_on):
                return None
            self.faults.error_reply = None
            return err

    def motion_started(self) -> None:
        """Protocols call this when a move starts, to arm the one-shot move faults."""
        now = time.monotonic()
        with self.lock:
            if self.faults.alarm_after_s is not None:
                self._move_faults.append((now + self.faults.alarm_after_s, "alarm"))
                self.faults.alarm_after_s = None
            if self.faults.limit_after_s is not None:
                self._move_faults.append((now + self.faults.limit_after_s, "limit"))
                self.faults.limit_after_s = None
            if self.faults.disconnect_after_s is not None:
                self._move_faults.append((now + self.faults.disconnect_after_s, "disconnect"))
                self.faults.disconnect_after_s = None

    # ------------------------------------------------------------- protocol hooks
    def on_bytes(self, data: bytes) -> None:
        raise NotImplementedError

    def tick(self) -> None:
        """Called every few milliseconds; emit time-driven replies here."""

    def on_alarm(self) -> None:
        """The armed mid-move fault fires (protocol-specific alarm or stall)."""
        self.axis.stop()

    def on_limit(self) -> None:
        """The axis runs onto a limit switch mid-move (protocol-specific report)."""
        self.on_alarm()

    # ------------------------------------------------------------- thread
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._master], [], [], 0.003)
            except (OSError, ValueError):
                return
            if ready:
                try:
                    data = os.read(self._master, 4096)
                except BlockingIOError:
                    data = b""
                except OSError:
                    data = b""  # no host has the port open right now
                    time.sleep(0.003)
                if data:
                    with self.lock:
                        self.received.extend(data)
                        self.on_bytes(data)
            with self.lock:
                if self.gone:
                    return
                self._fire_move_faults()
                if self.gone:
                    return
                self.tick()
                self._flush()

    def _fire_move_faults(self) -> None:
        now = time.monotonic()
        due = [f for f in self._move_faults if f[0] <= now]
        self._move_faults = [f for f in self._move_faults if f[0] > now]
        for _, kind in due:
            if kind == "disconnect":
                self.disconnect()
                return
            if self.axis.moving and kind == "limit":
                self.on_limit()
            elif self.axis.moving:
                self.on_alarm()

    def _flush(self) -> None:
        now = time.monotonic()
        while self._outbox and self._outbox[0][0] <= now:
            _, data = self._outbox.pop(0)
            with contextlib.suppress(OSError):  # host not listening: the bytes are lost
                os.write(self._master, data)
