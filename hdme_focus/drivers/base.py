"""Stage and Camera protocols, device errors, and SafeStage: the one motion guard.

Every move from every command goes through `SafeStage`, which refuses targets
outside the soft limits and steps larger than the configured maximum before
anything moves, waits for completion with a timeout, and stops the stage on any
exception or Ctrl-C.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Protocol, runtime_checkable

from hdme_focus.core.errors import DeviceError
from hdme_focus.core.frame import Frame

__all__ = [
    "Camera",
    "CameraError",
    "Clock",
    "CommunicationError",
    "DeviceError",
    "HomingStage",
    "MotionRefused",
    "NotHomedError",
    "PortBusyError",
    "RealClock",
    "SafeStage",
    "Stage",
    "StageFault",
    "StageTimeout",
]

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- errors


class MotionRefused(DeviceError):
    """SafeStage refused a move before anything moved (soft limit or step size)."""


class StageTimeout(DeviceError):
    """A move did not complete within its timeout; the stage has been told to stop."""


class StageFault(DeviceError):
    """The controller reported an error or alarm."""


class NotHomedError(StageFault):
    """The axis reports it is not homed and the config does not allow unhomed moves."""


class CommunicationError(DeviceError):
    """No reply, a late reply or a reply that does not parse."""


class PortBusyError(DeviceError):
    """Another process holds the serial port."""


class CameraError(DeviceError):
    """The camera failed to deliver a frame or refused a setting."""


# --------------------------------------------------------------------------- protocols


class Clock(Protocol):
    """Time source; the simulator swaps in simulated time so tests stay fast."""

    def monotonic(self) -> float: ...

    def sleep(self, seconds: float) -> None: ...


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        if seconds > 0:
            time.sleep(seconds)


@runtime_checkable
class Stage(Protocol):
    """One focus axis. Positions in mm. `move_to` may return before motion ends."""

    def position_mm(self) -> float: ...

    def move_to(self, target_mm: float) -> None: ...

    def is_moving(self) -> bool: ...

    def wait(self, timeout_s: float) -> None:
        """Block until the move is complete; raise StageTimeout after timeout_s."""
        ...

    def stop(self) -> None:
        """Stop motion now. Must be safe to call at any time, also when idle or faulted."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class HomingStage(Stage, Protocol):
    """A stage that knows whether it is homed and can home (every serial driver)."""

    def is_homed(self) -> bool: ...

    def home(self, timeout_s: float | None = None) -> None: ...


@runtime_checkable
class Camera(Protocol):
    def capture(self) -> Frame: ...

    def close(self) -> None: ...


# --------------------------------------------------------------------------- guard


class SafeStage:
    """The one guard every motion passes.

    Refuses a target outside [min_mm, max_mm] or a step longer than max_step_mm
    before the driver hears of it; waits for completion with a timeout; on any
    BaseException during a move or a homing cycle (an error, KeyboardInterrupt,
    `InterruptedBySignal` from SIGTERM/SIGHUP), stops the stage and re-raises.
    """

    def __init__(
        self,
        stage: Stage,
        min_mm: float,
        max_mm: float,
        max_step_mm: float,
        move_timeout_s: float = 30.0,
        settle_s: float = 0.0,
        clock: Clock | None = None,
        home_timeout_s: float = 120.0,
    ) -> None:
        if not min_mm < max_mm:
            raise ValueError(f"soft limits must satisfy min < max, got [{min_mm}, {max_mm}]")
        if max_step_mm <= 0:
            raise ValueError(f"max_step_mm must be positive, got {max_step_mm}")
        self.stage = stage
        self.min_mm = float(min_mm)
        self.max_mm = float(max_mm)
        self.max_step_mm = float(max_step_mm)
        self.move_timeout_s = float(move_timeout_s)
        self.settle_s = float(settle_s)
        self.clock: Clock = clock or RealClock()
        self.home_timeout_s = float(home_timeout_s)
        self.moves = 0
        self.stops = 0  # times the guard stopped the stage after an exception

    # -- checks (no motion)
    def check_target(self, target_mm: float) -> None:
        if not math.isfinite(target_mm):
            raise MotionRefused(f"refused move to {target_mm!r} mm: not a finite position")
        if not self.min_mm <= target_mm <= self.max_mm:
            raise MotionRefused(
                f"refused move to {target_mm:.4f} mm: outside the soft limits "
                f"[{self.min_mm:.4f}, {self.max_mm:.4f}] mm (stage.min_mm/max_mm in the config)"
            )

    def check_step(self, from_mm: float, target_mm: float) -> None:
        step = abs(target_mm - from_mm)
        if step > self.max_step_mm + 1e-9:
            raise MotionRefused(
                f"refused move from {from_mm:.4f} to {target_mm:.4f} mm: step {step:.4f} mm "
                f"exceeds stage.max_step_mm = {self.max_step_mm:.4f} mm"
            )

    def check_range(self, targets: Sequence[float]) -> None:
        """Refuse a whole planned path (e.g. a sweep) before its first move."""
        if len(targets) == 0:
            raise MotionRefused("refused: the planned path has no positions")
        for t in targets:
            self.check_target(float(t))

    # -- motion
    def position_mm(self) -> float:
        return self.stage.position_mm()

    def move_to(self, target_mm: float) -> float:
        """One guarded move; returns the position reported after settling."""
        target_mm = float(target_mm)
        self.check_target(target_mm)
        self.check_step(self.stage.position_mm(), target_mm)
        with self.guard():
            self.stage.move_to(target_mm)
            self.stage.wait(self.move_timeout_s)
            self.moves += 1
            self.clock.sleep(self.settle_s)
        return self.stage.position_mm()

    def travel_to(self, target_mm: float) -> float:
        """Reach a far target in steps of at most max_step_mm, each one guarded.

        The target is checked against the soft limits before the first step.
        """
        target_mm = float(target_mm)
        self.check_target(target_mm)
        pos = self.stage.position_mm()
        while abs(target_mm - pos) > 1e-9:
            step = max(-self.max_step_mm, min(self.max_step_mm, target_mm - pos))
            nxt = target_mm if abs(target_mm - pos) <= self.max_step_mm else pos + step
            self.move_to(nxt)
            pos = nxt
        return self.stage.position_mm()

    def is_moving(self) -> bool:
        return self.stage.is_moving()

    def is_homed(self) -> bool:
        """True for stages that cannot home (sim, replay): they have no reference to lose."""
        return not isinstance(self.stage, HomingStage) or self.stage.is_homed()

    def home(self, timeout_s: float | None = None) -> float:
        """Run the controller's homing cycle under the guard; returns the position after it.

        Homing is motion the soft limits cannot check (the controller seeks its
        switch), so what the guard adds is the stop on any exception, Ctrl-C or
        signal, and its own timeout (`home_timeout_s`).
        """
        if not isinstance(self.stage, HomingStage):
            raise StageFault(f"{type(self.stage).__name__} has no homing cycle")
        homing = self.stage
        with self.guard():
            homing.home(self.home_timeout_s if timeout_s is None else timeout_s)
        return self.stage.position_mm()

    def stop(self) -> None:
        self.stage.stop()

    def close(self) -> None:
        self.stage.close()

    @contextmanager
    def guard(self) -> Iterator[SafeStage]:
        """Stop the stage if anything escapes the block: an error, Ctrl-C, a signal.

        Catches BaseException, so KeyboardInterrupt and InterruptedBySignal stop
        the axis too. A failing stop is logged, never raised in place of the
        original exception (that one says what went wrong).
        """
        try:
            yield self
        except BaseException:
            self.stops += 1
            try:
                self.stage.stop()
            except BaseException as exc:  # the first exception is the one to report
                log.warning("stop after a failed move also failed: %s", exc)
            raise
