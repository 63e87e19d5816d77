"""Zaber stages over the Zaber ASCII protocol.

`/<device> <axis> move abs <microsteps>`, replies `@01 1 OK BUSY -- 0`.
Completion is polled until the reply says IDLE. Rejections (`RJ`) and fault
flags (`F*`) become `StageFault`s that say what they mean; `WR`/`WH` (no
reference position) refuse moves unless homed or allowed; `NI` after a move
means something interrupted it, which is an error too (the stage is not where
it was sent).
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass

from hdme_focus.config import ConfigError, ZaberStageConfig
from hdme_focus.drivers.base import (
    Clock,
    CommunicationError,
    DeviceError,
    NotHomedError,
    RealClock,
    StageFault,
    StageTimeout,
)
from hdme_focus.drivers.serial.link import SerialLink
from hdme_focus.drivers.serial.poll import await_completion

log = logging.getLogger(__name__)

ZABER_REJECTIONS: dict[str, str] = {
    "AGAIN": "the device cannot run the command right now; try again",
    "BADAXIS": "no such axis on this device (check stage.axis)",
    "BADCOMMAND": "the device does not know this command (old firmware?)",
    "BADDATA": "a value is malformed or out of range (e.g. a target outside the travel)",
    "BADMESSAGEID": "the message id is malformed",
    "DEVICEONLY": "the command must go to the whole device (axis 0), not an axis",
    "DRIVERDISABLED": "the motor driver is disabled (check power, cable and temperature)",
    "FULL": "the device's command buffer is full",
    "LOCKSTEP": "the axis belongs to a lockstep group; move the group instead",
    "NOACCESS": "the command needs a higher access level",
    "PARKED": "the axis is parked; unpark it first",
    "STATUSBUSY": "the device is busy (moving) and cannot run this command now",
}

ZABER_FLAGS: dict[str, str] = {
    "FD": "driver disabled (over-temperature, supply or motor cable fault)",
    "FQ": "encoder error",
    "FS": "stalled and stopped (the axis met an obstruction or too much load)",
    "FT": "excessive twist between lockstep axes",
    "FB": "stream bounds error",
    "FP": "interpolated path deviation",
    "FE": "limit error (a limit sensor behaved unexpectedly)",
    "WH": "device not homed",
    "WR": "no reference position (the axis has not been homed)",
    "WL": "unexpected limit trigger",
    "WV": "supply voltage out of range",
    "WT": "controller temperature high",
    "WM": "displaced while stationary",
    "NC": "manual control in use",
    "NI": "command interrupted (a stop, a new move or the knob ended the move early)",
    "ND": "stream discontinuity",
    "NU": "setting update pending",
    "NJ": "joystick calibration in progress",
}

_REPLY = re.compile(
    r"^@(\d+) (\d+) (?:\d+ )?(OK|RJ) (BUSY|IDLE) (\S\S)(?: (.*?))?(?::[0-9A-Fa-f]{2})?$"
)
NOT_HOMED = ("WR", "WH")
LIMIT_FLAGS = ("WL",)  # the axis met a limit sensor it did not expect: the move ended early


def flag_meaning(flag: str) -> str:
    return ZABER_FLAGS.get(flag, "see the Zaber ASCII protocol manual")


class ZaberRejected(StageFault):
    """The device answered `RJ` with a reason."""

    def __init__(self, command: str, reason: str) -> None:
        self.reason = reason
        meaning = ZABER_REJECTIONS.get(reason, "see the Zaber ASCII protocol manual")
        super().__init__(f"Zaber rejected {command!r}: {reason} ({meaning})")


@dataclass(frozen=True)
class ZaberReply:
    busy: bool
    flag: str
    data: str


class ZaberStage:
    """One axis of a Zaber device. Positions are microsteps / steps_per_mm."""

    def __init__(
        self,
        link: SerialLink,
        *,
        steps_per_mm: float,
        device: int = 1,
        axis: int = 1,
        allow_unhomed: bool = False,
        move_timeout_s: float = 30.0,
        home_timeout_s: float = 120.0,
        poll_s: float = 0.02,
        clock: Clock | None = None,
    ) -> None:
        self.link = link
        self.steps_per_mm = float(steps_per_mm)
        self.device = int(device)
        self.axis = int(axis)
        self.allow_unhomed = allow_unhomed
        self.move_timeout_s = float(move_timeout_s)
        self.home_timeout_s = float(home_timeout_s)
        self.poll_s = float(poll_s)
        self.clock: Clock = clock or RealClock()
        self._target_steps: int | None = None
        try:
            self._command("")
        except CommunicationError as exc:
            link.close()
            raise CommunicationError(
                f"{exc} [is it a Zaber device in ASCII mode at 115200 baud, device "
                f"{self.device} (stage.device_address)?]"
            ) from None
        except BaseException:
            link.close()
            raise

    def describe(self) -> str:
        return f"Zaber device {self.device} axis {self.axis} on {self.link.port}"

    # ------------------------------------------------------------- protocol
    def _command(self, command: str, timeout_s: float | None = None) -> ZaberReply:
        line = f"/{self.device} {self.axis} {command}".rstrip()
        t = self.link.timeout_s if timeout_s is None else timeout_s
        self.link.write_line(line)
        deadline = time.monotonic() + t
        try:
            while True:
                raw = self.link.read_line(max(0.0, deadline - time.monotonic()))
                if raw is None:
                    raise self.link.no_reply(repr(line), t)
                if raw.startswith(("!", "#")) or not raw.strip():
                    continue  # alerts and info lines
                m = _REPLY.match(raw.strip())
                if m is None:
                    raise self.link.garbled(raw.encode())
                dev, ax, verdict, status, flag, data = m.groups()
                if int(dev) != self.device or int(ax) not in (0, self.axis):
                    continue  # another device on the daisy chain
                if verdict == "RJ":
                    raise ZaberRejected(command or "(status)", data or "")
                return ZaberReply(status == "BUSY", flag, data or "")
        except DeviceError:
            self.link.drain()
            raise

    def warnings(self, clear: bool = False) -> list[str]:
        """All active warning flags (the reply's flag field only shows the first)."""
        reply = self._command("warnings clear" if clear else "warnings")
        return reply.data.split()[1:]

    # ------------------------------------------------------------- Stage protocol
    def position_mm(self) -> float:
        data = self._command("get pos").data.split()
        try:
            return int(data[0]) / self.steps_per_mm
        except (IndexError, ValueError):
            raise CommunicationError(f"Zaber 'get pos' reply has no position: {data!r}") from None

    def is_homed(self) -> bool:
        return not any(f in NOT_HOMED for f in self.warnings())

    def is_moving(self) -> bool:
        return self._command("").busy

    def move_to(self, target_mm: float) -> None:
        flags = self.warnings(clear=True)
        if any(f in NOT_HOMED for f in flags) and not self.allow_unhomed:
            raise NotHomedError(
                f"{self.describe()} has no reference position (WR): run `hdme-focus stage home`, "
                "or set stage.allow_unhomed = true to move without homing"
            )
        for flag in flags:
            if flag.startswith("F"):
                log.warning("Zaber reported %s (%s) before this move", flag, flag_meaning(flag))
        steps = round(float(target_mm) * self.steps_per_mm)
        self._command(f"move abs {steps}")
        self._target_steps = steps

    def _poll_until_idle(self, timeout_s: float, what: str, setting: str) -> ZaberReply:
        """Ask for status every poll_s (on self.clock) until IDLE; faults and limits raise."""
        last: list[ZaberReply] = []
        first = [True]

        def read(wait_s: float) -> ZaberReply:
            if not first[0]:
                self.clock.sleep(wait_s)
            first[0] = False
            last[:] = [self._command("")]
            return last[0]

        def done(reply: ZaberReply) -> bool:
            if reply.flag.startswith("F") or reply.flag in LIMIT_FLAGS:
                self.stop()
                raise StageFault(
                    f"{self.describe()} {reply.flag} during {what}: "
                    f"{flag_meaning(reply.flag)}; the stage was stopped"
                )
            return not reply.busy

        def timed_out() -> BaseException:
            self.stop()
            return StageTimeout(
                f"{what} on {self.describe()} did not complete within {timeout_s:g} s "
                f"({setting}); the stage was stopped"
            )

        await_completion(
            clock=self.clock,
            timeout_s=timeout_s,
            poll_s=self.poll_s,
            silence_s=math.inf,  # every poll is a command with its own reply timeout
            poll=lambda: None,
            read=read,
            done=done,
            timed_out=timed_out,
            silent=lambda: self.link.no_reply(what),
        )
        return last[0]

    def wait(self, timeout_s: float) -> None:
        reply = self._poll_until_idle(timeout_s, "move", "stage.move_timeout_s")
        if reply.flag == "NI":
            self._command("warnings clear")
            raise StageFault(
                f"{self.describe()}: the move was interrupted before reaching its target "
                f"(NI: {flag_meaning('NI')})"
            )
        self._target_steps = None

    def home(self, timeout_s: float | None = None) -> None:
        self._command("home")
        t = self.home_timeout_s if timeout_s is None else timeout_s
        self._poll_until_idle(t, "homing", "stage.home_timeout_s")
        if not self.is_homed():
            raise StageFault(f"{self.describe()}: homing ended without a reference position")

    def stop(self) -> None:
        """`stop`, then wait (bounded) until the axis is idle. Never raises."""
        self._target_steps = None
        if self.link.dead:
            log.warning("stop: %s is disconnected; nothing to stop", self.link.port)
            return
        try:
            self.link.write_line(f"/{self.device} {self.axis} stop")
            end = time.monotonic() + self.link.timeout_s
            self.link.drain(quiet_s=0.02, max_s=0.2)
            while time.monotonic() < end:
                if not self._command("", end - time.monotonic()).busy:
                    break
                time.sleep(self.poll_s)
        except DeviceError as exc:
            log.warning("stop: %s", exc)

    def close(self) -> None:
        self.link.close()


def open_zaber_stage(cfg: ZaberStageConfig) -> ZaberStage:
    if cfg.steps_per_mm <= 0:
        raise ConfigError(
            "stage.steps_per_mm must be set for a Zaber stage: microsteps per mm = "
            "1 / microstep size in mm, from the device's datasheet "
            "(e.g. 20997.4 for a 0.047625 um microstep)"
        )
    if not cfg.axis.strip().isdigit():
        raise ConfigError(
            f'stage.axis = {cfg.axis!r}: a Zaber axis is a number; use "1" for a single-axis device'
        )
    link = SerialLink.from_config(cfg.serial, name="Zaber")
    return ZaberStage(
        link,
        steps_per_mm=cfg.steps_per_mm,
        device=cfg.device_address,
        axis=int(cfg.axis),
        allow_unhomed=cfg.allow_unhomed,
        move_timeout_s=cfg.move_timeout_s,
        home_timeout_s=cfg.home_timeout_s,
    )
