"""G-code focus stages: GRBL 1.1 and Marlin 2 controllers (DIY and OpenFlexure-style rigs).

Every line waits for its `ok` within the reply timeout; `error:N` and `ALARM:N`
become `StageFault`s that say what the code means. Completion is `G4 P0` on
GRBL (its `ok` comes once the planner is empty; `?` is polled meanwhile so a
silent controller is noticed within the reply timeout) and `M400` on Marlin.
Stop is feed hold `!` then soft reset 0x18 on GRBL and `M410` on Marlin.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field

from hdme_focus.config import ConfigError, GcodeStageConfig
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

GRBL_AXES = "XYZABC"

GRBL_ERRORS: dict[int, str] = {
    1: "G-code words consist of a letter and a value; letter was not found",
    2: "missing the expected G-code word value or numeric value format is not valid",
    3: "Grbl '$' system command was not recognized or supported",
    4: "negative value received for an expected positive value",
    5: "homing cycle failure: homing is not enabled via settings ($22)",
    6: "minimum step pulse time must be greater than 3 usec",
    7: "an EEPROM read failed; auto-restoring affected EEPROM to default values",
    8: "Grbl '$' command cannot be used unless Grbl is IDLE",
    9: "G-code commands are locked out during alarm or jog state",
    10: "soft limits cannot be enabled without homing also enabled",
    11: "max characters per line exceeded; received command line was not executed",
    12: "Grbl '$' setting value causes the step rate to exceed the maximum supported",
    13: "safety door detected as opened and door state initiated",
    14: "build info or startup line exceeded EEPROM line length limit",
    15: "jog target exceeds machine travel; jog command has been ignored",
    16: "jog command has no '=' or contains prohibited g-code",
    17: "laser mode requires PWM output",
    20: "unsupported or invalid g-code command found in block",
    21: "more than one g-code command from same modal group found in block",
    22: "feed rate has not yet been set or is undefined",
    23: "g-code command in block requires an integer value",
    24: "more than one g-code command that requires axis words found in block",
    25: "repeated g-code word found in block",
    26: "no axis words found in block for g-code command or current modal state",
    27: "line number value is invalid",
    28: "g-code command is missing a required value word",
    29: "G59.x work coordinate systems are not supported",
    30: "G53 only allowed with G0 and G1 motion modes",
    31: "axis words found in block when no command or current modal state uses them",
    32: "G2 and G3 arcs require at least one in-plane axis word",
    33: "motion command target is invalid",
    34: "arc radius value is invalid",
    35: "G2 and G3 arcs require at least one in-plane offset word",
    36: "unused value words found in block",
    37: "G43.1 dynamic tool length offset is not assigned to configured tool length axis",
    38: "tool number greater than max supported value",
}

GRBL_ALARMS: dict[int, str] = {
    1: "hard limit triggered; machine position is likely lost, re-homing is recommended",
    2: "soft limit: the motion target exceeds machine travel; position retained",
    3: "reset while in motion; position is likely lost, re-homing is recommended",
    4: "probe fail: the probe is not in the expected initial state",
    5: "probe fail: the probe did not contact the workpiece",
    6: "homing fail: reset during active homing cycle",
    7: "homing fail: safety door was opened during active homing cycle",
    8: "homing fail: cycle failed to clear limit switch when pulling off",
    9: "homing fail: could not find limit switch within search distance",
}

_MOVING_STATES = ("Run", "Jog", "Home", "Hold:1")
CRITICAL_ALARMS = (1, 2)  # hard and soft limit: GRBL ignores everything until a reset
RESET_TRIES = 3
MM_PER_INCH = 25.4
WORK_SYSTEMS = ("G54", "G55", "G56", "G57", "G58", "G59")


class GrblError(StageFault):
    """GRBL answered `error:N`."""

    def __init__(self, code: int, line: str) -> None:
        self.code = code
        meaning = GRBL_ERRORS.get(code, "unknown error code")
        super().__init__(f"GRBL refused {line!r}: error:{code} ({meaning})")


class GrblAlarm(StageFault):
    """GRBL raised `ALARM:N`; it refuses motion until reset/unlocked or homed.

    `reset` says whether the driver's reset after a critical alarm (1, 2) was
    confirmed by GRBL's banner (None: no reset was needed).
    """

    def __init__(self, code: int, reset: bool | None = None) -> None:
        self.code = code
        self.reset = reset
        meaning = GRBL_ALARMS.get(code, "unknown alarm code")
        if reset is False:
            after = (
                "GRBL did not confirm the reset and may still be locked: press its reset "
                "button or power-cycle it, then `hdme-focus stage home`"
            )
        else:
            after = "motion stopped. Fix the cause, then `hdme-focus stage home`"
        super().__init__(f"GRBL alarm ALARM:{code} ({meaning}); {after}")


@dataclass
class GrblReport:
    """One status report, field by field (GRBL 1.1 interface, "Real-time Status Reports").

    Positions are in the controller's report units (inches with `$13=1`);
    `position_mm` is filled in by the driver for its axis. `fields` keeps every
    field's raw text, known or not (`Pn:XYZRHS`, `A:F`, ...).
    """

    state: str
    mpos: list[float] | None = None
    wpos: list[float] | None = None
    wco: list[float] | None = None
    fields: dict[str, str] = field(default_factory=dict)
    position_mm: float = math.nan

    @property
    def pins(self) -> str:
        """Input pins reported active: X Y Z limits, P probe, D door, H hold, R reset, S start."""
        return self.fields.get("Pn", "")


_NUMERIC_FIELDS = ("MPos", "WPos", "WCO", "Bf", "Ln", "F", "FS", "Ov")


def parse_status(line: str) -> GrblReport:
    """Parse `<State|Field:value|...>`; unknown fields are kept as text, never an error.

    Raises ValueError when the frame or a numeric field does not parse.
    """
    if not (line.startswith("<") and line.endswith(">")):
        raise ValueError(f"not a status report: {line!r}")
    state, *parts = line[1:-1].split("|")
    if not state or not parts:
        raise ValueError(f"status report without fields: {line!r}")
    report = GrblReport(state)
    for part in parts:
        key, _, value = part.partition(":")
        report.fields[key] = value
        if key in _NUMERIC_FIELDS:
            numbers = [float(v) for v in value.split(",")]
            if key == "MPos":
                report.mpos = numbers
            elif key == "WPos":
                report.wpos = numbers
            elif key == "WCO":
                report.wco = numbers
    return report


def _parse_number(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


class GcodeStage:
    """Common part of the GRBL and Marlin drivers: link, axis letter, feed rate, timeouts."""

    controller = "G-code controller"

    def __init__(
        self,
        link: SerialLink,
        *,
        axis: str = "Z",
        feed_mm_min: float = 120.0,
        allow_unhomed: bool = False,
        move_timeout_s: float = 30.0,
        home_timeout_s: float = 120.0,
        poll_s: float = 0.05,
        clock: Clock | None = None,
    ) -> None:
        axis = axis.strip().upper()
        if len(axis) != 1 or axis not in GRBL_AXES:
            link.close()
            raise ConfigError(f"stage.axis = {axis!r}: a G-code axis is one of X, Y, Z, A, B, C")
        self.link = link
        self.axis = axis
        self.feed_mm_min = float(feed_mm_min)
        self.allow_unhomed = allow_unhomed
        self.move_timeout_s = float(move_timeout_s)
        self.home_timeout_s = float(home_timeout_s)
        self.poll_s = float(poll_s)
        self.clock: Clock = clock or RealClock()
        self._target_mm: float | None = None
        self._wco = [0.0] * len(GRBL_AXES)
        self._pins_before = ""  # Pn: when the last move started
        self._wco_known = True  # False after a reset: learned again before the next status
        self.reset_confirmed: bool | None = None  # the last stop's reset, None before any
        self._homed = False
        self._moving = False
        try:
            self._handshake()
        except BaseException:
            link.close()
            raise

    def _handshake(self) -> None:
        raise NotImplementedError

    # the Stage protocol, plus homing; implemented per dialect
    def position_mm(self) -> float:
        raise NotImplementedError

    def move_to(self, target_mm: float) -> None:
        raise NotImplementedError

    def wait(self, timeout_s: float) -> None:
        raise NotImplementedError

    def is_moving(self) -> bool:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def is_homed(self) -> bool:
        raise NotImplementedError

    def home(self, timeout_s: float | None = None) -> None:
        raise NotImplementedError

    @property
    def reply_timeout_s(self) -> float:
        return self.link.timeout_s

    def describe(self) -> str:
        return f"{self.controller} on {self.link.port}, axis {self.axis}"

    def close(self) -> None:
        self.link.close()

    def _move_line(self, target_mm: float) -> str:
        return f"G1 {self.axis}{target_mm:.4f} F{self.feed_mm_min:g}"


class GrblStage(GcodeStage):
    """A GRBL 1.1 controller. Unhomed = GRBL's homing lock (it boots in Alarm).

    On connect it learns what GRBL does not repeat in every report: `$13`
    (report inches) from `$$` and the work offset from `$G` + `$#`; every move
    is sent with `G21 G90`, so a controller left in G20 cannot turn a 0.1 mm
    step into 2.54 mm.
    """

    controller = "GRBL"
    report_scale = 1.0  # mm per reported unit: 25.4 with $13=1

    # ------------------------------------------------------------- protocol
    def _handshake(self) -> None:
        """Ask `?` until a status arrives (an Arduino reboots for ~1 s when the port opens)."""
        t = self.reply_timeout_s
        deadline = time.monotonic() + t
        while time.monotonic() < deadline:
            self.link.write(b"?")
            round_end = min(deadline, time.monotonic() + 0.25)
            while (left := round_end - time.monotonic()) > 0:
                line = self.link.read_line(left)
                if line is None:
                    break
                if line.startswith("<"):
                    self.link.drain(quiet_s=0.02, max_s=0.2)
                    self._learn_setup()
                    return
                if line.startswith("Grbl"):
                    break  # it just booted: ask again at once
        raise CommunicationError(
            f"no status reply from a GRBL controller on {self.link.port} within {t:g} s "
            "(check stage.serial.port and baudrate, and stage.dialect: 'grbl' or 'marlin')"
        )

    def _learn_setup(self) -> None:
        """Units from `$13`, work offset from `$G` (active system) and `$#` (its offsets)."""
        settings: dict[int, str] = {}
        try:
            lines = self._query("$$")
        except CommunicationError:
            # status answered but a line did not: GRBL is locked after a limit alarm
            # ([MSG:Reset to continue]); only a reset unlocks it
            if self.link.dead or not self._reset():
                raise
            lines = self._query("$$")
        for line in lines:
            key, sep, value = line.partition("=")
            if sep and key[1:].isdigit():
                settings[int(key[1:])] = value
        self.report_scale = MM_PER_INCH if settings.get(13, "0").strip() == "1" else 1.0
        self._learn_offset()

    def _learn_offset(self) -> None:
        active = "G54"
        for line in self._query("$G"):
            if line.startswith("[GC:"):
                active = next((w for w in line[4:-1].split() if w in WORK_SYSTEMS), "G54")
        offsets: dict[str, list[float]] = {}
        for line in self._query("$#"):
            name, _, value = line.strip("[]").partition(":")
            try:
                offsets[name] = [float(v) for v in value.split(":")[0].split(",")]
            except ValueError:
                raise self.link.garbled(line.encode()) from None
        i = GRBL_AXES.index(self.axis)
        wco = offsets.get(active, [])[i : i + 1] or [0.0]
        g92 = offsets.get("G92", [])[i : i + 1] or [0.0]
        tlo = offsets.get("TLO", [0.0])[0] if self.axis == "Z" else 0.0
        self._wco[i] = (wco[0] + g92[0] + tlo) * self.report_scale

    def _query(self, command: str) -> list[str]:
        """A `$` view command's lines (`[...]` or `$n=v`) up to its `ok`."""
        lines: list[str] = []
        self.link.write_line(command)
        deadline = time.monotonic() + self.reply_timeout_s
        try:
            while True:
                reply = self.link.read_line(max(deadline - time.monotonic(), 0.0))
                if reply is None:
                    raise self.link.no_reply(repr(command))
                if self._handle(reply, command):
                    return lines
                if reply.startswith(("[", "$")) and not reply.startswith("[MSG:"):
                    lines.append(reply)
        except DeviceError:
            self.link.drain()
            raise

    def _parse_status(self, line: str) -> GrblReport:
        try:
            report = parse_status(line)
        except ValueError:
            raise self.link.garbled(line.encode()) from None
        i = GRBL_AXES.index(self.axis)
        if report.wco is not None and len(report.wco) > i:
            self._wco[i] = report.wco[i] * self.report_scale
        if report.wpos is not None and len(report.wpos) > i:
            report.position_mm = report.wpos[i] * self.report_scale
        elif report.mpos is not None and len(report.mpos) > i:
            report.position_mm = report.mpos[i] * self.report_scale - self._wco[i]
        else:
            raise CommunicationError(
                f"GRBL status {line!r} does not report axis {self.axis} (check stage.axis)"
            )
        return report

    def _handle(self, line: str, what: str) -> bool:
        """React to one line; True when it is the awaited `ok`. Raises on error/alarm."""
        if line == "ok":
            return True
        if line.startswith("error:"):
            code = _parse_number(line[6:])
            if code is None:
                raise self.link.garbled(line.encode())
            raise GrblError(code, what)
        if line.startswith("ALARM:"):
            code = _parse_number(line[6:])
            if code is None:
                raise self.link.garbled(line.encode())
            raise self._alarm(code)
        if line.startswith("<"):
            self._parse_status(line)
        elif line.startswith("Grbl"):
            raise StageFault(
                f"GRBL on {self.link.port} reset itself while running {what!r} (power or "
                "USB glitch?); its position may be lost: home again"
            )
        elif line:
            log.debug("GRBL: %s", line)
        return False

    def _alarm(self, code: int) -> GrblAlarm:
        """ALARM:1 and ALARM:2 lock GRBL until a reset: send it (verified) before reporting."""
        if code not in CRITICAL_ALARMS:
            return GrblAlarm(code)
        self.link.drain(quiet_s=0.02, max_s=0.2)  # `[MSG:Reset to continue]`
        return GrblAlarm(code, reset=self._reset())

    def _reset(self) -> bool:
        """Soft reset 0x18 until the banner comes (a few tries, bounded); True if it came."""
        for _ in range(RESET_TRIES):
            self.link.write(b"\x18")
            end = time.monotonic() + min(1.0, self.reply_timeout_s)
            while (left := end - time.monotonic()) > 0:
                try:
                    line = self.link.read_line(left)
                except CommunicationError:
                    if self.link.dead:
                        raise
                    continue
                if line is None:
                    break
                if line.startswith("Grbl"):
                    self.link.drain(quiet_s=0.03, max_s=0.3)
                    self._wco_known = False
                    return True
        log.warning(
            "GRBL on %s did not confirm its reset (no banner after %d tries)",
            self.link.port,
            RESET_TRIES,
        )
        return False

    def _command(self, line: str, timeout_s: float | None = None) -> None:
        """Send one line and wait for its `ok`."""
        t = self.reply_timeout_s if timeout_s is None else timeout_s
        self.link.write_line(line)
        deadline = time.monotonic() + t
        try:
            while True:
                left = deadline - time.monotonic()
                reply = self.link.read_line(max(left, 0.0))
                if reply is None:
                    raise self.link.no_reply(repr(line), t)
                if self._handle(reply, line):
                    return
        except DeviceError:
            self.link.drain()
            raise

    def status(self) -> GrblReport:
        if not self._wco_known:  # after a reset GRBL's state is new; learn it again
            self._wco_known = True
            self._learn_offset()
        self.link.write(b"?")
        deadline = time.monotonic() + self.reply_timeout_s
        try:
            while True:
                reply = self.link.read_line(max(deadline - time.monotonic(), 0.0))
                if reply is None:
                    raise self.link.no_reply("a status query '?'")
                if reply.startswith("<"):
                    return self._parse_status(reply)
                self._handle(reply, "?")  # a stray ok is harmless; errors and alarms raise
        except DeviceError:
            self.link.drain()
            raise

    # ------------------------------------------------------------- Stage protocol
    def position_mm(self) -> float:
        return self.status().position_mm

    def is_homed(self) -> bool:
        return self.status().state != "Alarm"

    def is_moving(self) -> bool:
        return self.status().state.startswith(_MOVING_STATES)

    def move_to(self, target_mm: float) -> None:
        report = self.status()
        state = report.state
        self._pins_before = report.pins  # floating inputs read "pressed" all the time
        if state == "Alarm":
            if not self.allow_unhomed:
                raise NotHomedError(
                    f"GRBL on {self.link.port} is locked in Alarm (axis not homed, or after an "
                    "alarm): run `hdme-focus stage home`, or set stage.allow_unhomed = true to "
                    "unlock with $X and move without homing"
                )
            self._command("$X")
        elif state.startswith(("Hold", "Door")) or state.startswith(_MOVING_STATES):
            raise StageFault(
                f"GRBL is busy ({state}); wait for it or run `hdme-focus stage stop` first"
            )
        self._command("G21 G90 " + self._move_line(float(target_mm)))
        self._target_mm = float(target_mm)

    def _await_ok(self, line: str, timeout_s: float, what: str, setting: str) -> None:
        """Send `line` and wait for its `ok`, polling `?` so silence is noticed."""
        self.link.write_line(line)

        def timed_out() -> BaseException:
            self.stop()
            return StageTimeout(
                f"{what} on {self.describe()} did not complete within {timeout_s:g} s "
                f"({setting}); the stage was stopped"
            )

        def read(wait_s: float) -> str | None:
            return self.link.read_line(wait_s)

        try:
            await_completion(
                clock=self.clock,
                timeout_s=timeout_s,
                poll_s=self.poll_s,
                silence_s=self.reply_timeout_s,
                poll=lambda: self.link.write(b"?"),
                read=read,
                done=lambda reply: self._handle(reply, line),
                timed_out=timed_out,
                silent=lambda: self.link.no_reply(f"status queries during {what}"),
            )
        except DeviceError:
            self.link.drain()
            raise

    def wait(self, timeout_s: float) -> None:
        """`G4 P0` answers once the planner is empty; `?` is polled to catch silence."""
        self._await_ok("G4 P0", timeout_s, "move", "stage.move_timeout_s")
        self._target_mm = None
        pins = self.status().pins
        if self.axis in pins and self.axis not in self._pins_before:
            raise StageFault(
                f"GRBL reports the {self.axis} limit switch pressed after the move (Pn:{pins}); "
                "with hard limits off ($21=0) GRBL does not stop for it and its position is "
                "unreliable: move off the switch, check stage.min_mm/max_mm, then home again"
            )

    def home(self, timeout_s: float | None = None) -> None:
        """`$H`: GRBL answers `ok` when the homing cycle has finished (ALARM:6/8/9 if it fails)."""
        t = self.home_timeout_s if timeout_s is None else timeout_s
        self._await_ok("$H", t, "homing", "stage.home_timeout_s")

    def stop(self) -> None:
        """Feed hold, let it decelerate, then soft reset (position is kept). Never raises."""
        if self.link.dead:
            log.warning("stop: %s is disconnected; nothing to stop", self.link.port)
            return
        try:
            self.link.write(b"!")
        except CommunicationError as exc:
            log.warning("stop: %s", exc)
            return
        end = time.monotonic() + min(0.5, self.reply_timeout_s)
        held = False
        while not held and time.monotonic() < end:
            try:
                self.link.write(b"?")
                line = self.link.read_line(0.05)
                while line is not None and not held:
                    if line.startswith("<"):
                        state = line[1:].split("|")[0]  # only the state: no field can stop this
                        held = state in ("Idle", "Hold:0", "Alarm") or state.startswith("Door")
                    line = None if held else self.link.read_line(0.01)
            except CommunicationError as exc:
                if self.link.dead:
                    log.warning("stop: %s", exc)
                    return
        try:
            self.reset_confirmed = self._reset()
        except CommunicationError as exc:
            log.warning("stop: %s", exc)
        self._target_mm = None


class MarlinStage(GcodeStage):
    """A Marlin 2 controller. Marlin cannot report whether an axis is homed, so the
    axis counts as homed only after `home()` in this session (or with allow_unhomed)."""

    controller = "Marlin"

    def _handshake(self) -> None:
        t = self.reply_timeout_s
        deadline = time.monotonic() + t
        while time.monotonic() < deadline:
            self.link.write_line("M114")
            round_end = min(deadline, time.monotonic() + 0.3)
            while (left := round_end - time.monotonic()) > 0:
                line = self.link.read_line(left)
                if line is None:
                    break
                if self._position_from(line) is not None:
                    self.link.drain(quiet_s=0.05, max_s=0.5)  # oks of repeated M114s
                    return
        raise CommunicationError(
            f"no M114 reply from a Marlin controller on {self.link.port} within {t:g} s "
            "(check stage.serial.port and baudrate, and stage.dialect: 'grbl' or 'marlin')"
        )

    def _position_from(self, line: str) -> float | None:
        head = line.split("Count")[0]
        for word in head.split():
            if word.startswith(self.axis + ":"):
                try:
                    return float(word[2:])
                except ValueError:
                    raise self.link.garbled(line.encode()) from None
        return None

    def _command(
        self, line: str, timeout_s: float | None = None, *, is_move_wait: bool = False
    ) -> list[str]:
        t = self.reply_timeout_s if timeout_s is None else timeout_s
        self.link.write_line(line)
        deadline = time.monotonic() + t
        lines: list[str] = []
        try:
            while True:
                reply = self.link.read_line(max(deadline - time.monotonic(), 0.0))
                if reply is None:
                    if is_move_wait:
                        self.stop()
                        raise StageTimeout(
                            f"move on {self.describe()} did not complete within {t:g} s "
                            f"(no ok to {line!r}; stage.move_timeout_s); the stage was stopped"
                        )
                    raise self.link.no_reply(repr(line), t)
                if reply.startswith("ok"):
                    return lines
                self._check(reply, line)
                lines.append(reply)
        except DeviceError:
            self.link.drain()
            raise

    def _check(self, reply: str, line: str) -> None:
        low = reply.lower()
        if reply.startswith("Error:"):
            text = reply[6:].strip()
            fix = " (power-cycle the board or send M999)" if "halted" in low else ""
            raise StageFault(f"Marlin error after {line!r}: {text}{fix}")
        if "unknown command" in low:
            raise StageFault(f"Marlin does not know the command {line!r} ({reply})")
        if "endstops hit" in low:
            raise StageFault(
                f"Marlin: endstop hit during {line!r} ({reply}); the axis ran into a limit "
                "switch: check stage.min_mm/max_mm, then home again"
            )
        if "home" in low and "first" in low:
            raise NotHomedError(f"Marlin refused {line!r}: {reply}; run `hdme-focus stage home`")
        if reply.startswith("Resend:"):
            raise CommunicationError(f"Marlin asked to resend {line!r}: the line was corrupted")

    def position_mm(self) -> float:
        for reply in self._command("M114"):
            pos = self._position_from(reply)
            if pos is not None:
                return pos
        raise CommunicationError(f"Marlin's M114 reply has no {self.axis} position")

    def is_homed(self) -> bool:
        return self._homed

    def is_moving(self) -> bool:
        """Marlin has no cheap motion query: True between a move and its completed wait."""
        return self._moving

    def move_to(self, target_mm: float) -> None:
        if not (self._homed or self.allow_unhomed):
            raise NotHomedError(
                f"Marlin on {self.link.port}: axis {self.axis} has not been homed in this "
                "session (Marlin cannot report it, and most boards reset when the port opens): "
                "run `hdme-focus stage home`, set stage.home_on_connect = true, or set "
                "stage.allow_unhomed = true"
            )
        self._command("G90")
        self._moving = True
        self._command(self._move_line(float(target_mm)))
        self._target_mm = float(target_mm)

    def wait(self, timeout_s: float) -> None:
        """`M400` answers once all moves are done (busy keep-alives may come meanwhile)."""
        self._command("M400", timeout_s, is_move_wait=True)
        self._moving = False

    def home(self, timeout_s: float | None = None) -> None:
        t = self.home_timeout_s if timeout_s is None else timeout_s
        self._moving = True
        self._command(f"G28 {self.axis}", t, is_move_wait=True)
        self._moving = False
        self._homed = True

    def stop(self) -> None:
        """`M410` quick-stop (needs EMERGENCY_PARSER to act while M400 waits). Never raises."""
        self._moving = False
        if self.link.dead:
            log.warning("stop: %s is disconnected; nothing to stop", self.link.port)
            return
        try:
            self.link.write_line("M410")
            self.link.drain(quiet_s=0.1, max_s=min(1.0, self.reply_timeout_s))
        except CommunicationError as exc:
            log.warning("stop: %s", exc)


def open_gcode_stage(cfg: GcodeStageConfig) -> GcodeStage:
    """Open the port named in the config and handshake with GRBL or Marlin."""
    name = "GRBL controller" if cfg.dialect == "grbl" else "Marlin controller"
    link = SerialLink.from_config(cfg.serial, name=name)
    cls: type[GcodeStage] = GrblStage if cfg.dialect == "grbl" else MarlinStage
    return cls(
        link,
        axis=cfg.axis,
        feed_mm_min=cfg.feed_mm_min,
        allow_unhomed=cfg.allow_unhomed,
        move_timeout_s=cfg.move_timeout_s,
        home_timeout_s=cfg.home_timeout_s,
    )
