"""An emulated GRBL 1.1 or Marlin 2 controller with one moving axis.

GRBL follows its 1.1 interface document (gnea/grbl doc/markdown/interface.md,
commands.md, settings.md) where the driver depends on it: the power-up banner
and `[MSG:'$H'|'$X' to unlock]`; `ok` for every line, CR and LF each ending
one; `$$`, `$G`, `$I`, `$#`, `$X`, `$H`; real error codes; status reports field
by field (`MPos` or `WPos` by `$10`, `Bf`, `FS`, `WCO` right after a reset and
every 10th report, `Ov` in between, `Pn`, `A`); `G20`/`G21` and `$13`; feed
hold `!` to `Hold:0` and `~` to resume; homing ends at `-$27` (the pull-off);
soft limits (`ALARM:2`) only with `$20=1`, hard limits (`ALARM:1`) with
`$21=1`, both followed by `[MSG:Reset to continue]` and a lock in which every
line but a reset is ignored. Marlin: `ok`, `M400`, `M114`, `G28`, `M410` acted
on at once (emergency parser), `echo:busy: processing` keep-alives,
`echo:endstops hit:` on a fault.
"""

from __future__ import annotations

import re
import time
from collections import deque

from hdme_focus.drivers.serial.emulators.base import EmulatedAxis, Faults, PtyEmulator

GRBL_BANNER = b"\r\nGrbl 1.1h ['$' for help]\r\n"
GRBL_LOCKED = b"[MSG:'$H'|'$X' to unlock]\r\n"
GRBL_CRITICAL = b"[MSG:Reset to continue]\r\n"
_WORD = re.compile(r"([A-Z])\s*([-+]?(?:\d+\.?\d*|\.\d+))")
AXES = "XYZ"
MM_PER_INCH = 25.4
# GRBL 1.1's word letters (anything else is error:20) and the G/M codes this emulator runs
_GRBL_LETTERS = set("FGHIJKLMNPRSTXYZ")
_GRBL_G = {0, 1, 4, 17, 20, 21, 28, 54, 90, 91, 94}
_GRBL_M = {0, 2, 3, 5, 8, 9, 30}
# stock GRBL 1.1h settings ($$), those the emulator acts on marked below
GRBL_DEFAULT_SETTINGS: dict[int, float] = {
    0: 10, 1: 25, 2: 0, 3: 0, 4: 0, 5: 0, 6: 0,
    10: 1,  # status mask: bit 0 MPos (else WPos), bit 1 buffer state
    11: 0.010, 12: 0.002,
    13: 0,  # report inches
    20: 0,  # soft limits
    21: 0,  # hard limits
    22: 1,  # homing cycle
    23: 0, 24: 25.0, 25: 500.0, 26: 250,
    27: 1.0,  # homing pull-off, mm: the machine position after $H is -$27
    30: 1000, 31: 0, 32: 0,
    100: 250.0, 101: 250.0, 102: 250.0, 110: 500.0, 111: 500.0, 112: 500.0,
    120: 10.0, 121: 10.0, 122: 10.0, 130: 200.0, 131: 200.0, 132: 200.0,
}  # fmt: skip


def _fmt_setting(key: int, value: float) -> str:
    """GRBL prints integer settings bare and real-valued ones with three decimals."""
    real = key in (11, 12, 24, 25, 27) or key >= 100
    return f"{value:.3f}" if real else f"{value:g}"


class GcodeEmulator(PtyEmulator):
    """GRBL or Marlin on a pty; `axis_letter` is the emulated axis (others stay at 0).

    The emulated axis's position is GRBL's machine position (MPos) in mm;
    `wco_mm` is the work offset of that axis (G54 + G92), `pins` the input pins
    reported as pressed (`Pn:`), `settings` GRBL's `$` settings.
    """

    def __init__(
        self,
        dialect: str = "grbl",
        axis: EmulatedAxis | None = None,
        faults: Faults | None = None,
        axis_letter: str = "Z",
        homing_enabled: bool = True,
        busy_interval_s: float = 2.0,
        wco_mm: float = 0.0,
    ) -> None:
        if dialect not in ("grbl", "marlin"):
            raise ValueError(f"dialect must be 'grbl' or 'marlin', got {dialect!r}")
        self.name = f"{dialect}-emulator"
        super().__init__(axis, faults)
        self.dialect = dialect
        self.axis_letter = axis_letter.upper()
        self.busy_interval_s = busy_interval_s
        self.settings = dict(GRBL_DEFAULT_SETTINGS)
        self.settings[22] = 1 if homing_enabled else 0
        self.wco_mm = float(wco_mm)
        self.pins: set[str] = set()
        self.inches = False  # G20 modal state
        self.coolant = False  # M8: the `A:F` accessory field
        self._line = bytearray()
        self._queue: deque[str] = deque()
        self._waiting: str | None = None  # command blocked until motion ends
        self._last_busy = 0.0
        self.absolute = True
        self.hold = False
        self._held_target: float | None = None
        self.alarm = dialect == "grbl" and homing_enabled and not self.axis.homed
        self.critical = False  # ALARM:1/2: everything but a reset is ignored
        self.halted = False
        self.resets = 0  # 0x18 received (lost ones included)
        self._wco_countdown = 0  # reports until the next WCO (0: in the next one)
        self._ovr_countdown = 1
        if dialect == "grbl":
            self.send(GRBL_BANNER + (GRBL_LOCKED if self.alarm else b""))

    @property
    def homing_enabled(self) -> bool:
        return bool(self.settings[22])

    def connected_mid_session(self, reports_until_wco: int = 9) -> None:
        """As if the host connects to a controller that has been running: no WCO for a while."""
        with self.lock:
            self._wco_countdown = reports_until_wco
            self._outbox.clear()

    # ---------------------------------------------------------------- input
    def on_bytes(self, data: bytes) -> None:
        for byte in data:
            ch = bytes([byte])
            if self.dialect == "grbl" and ch in (b"?", b"!", b"~", b"\x18"):
                self._realtime(ch)
                continue
            if ch in (b"\n", b"\r"):
                line = self._line.decode("ascii", "replace").strip()
                self._line.clear()
                if self.dialect == "marlin" and line.upper().startswith("M410"):
                    self.axis.stop()  # emergency parser: acted on before the queue
                if line or self.dialect == "grbl":  # GRBL answers an empty line with ok
                    self._queue.append(line)
            else:
                self._line.extend(ch)

    def tick(self) -> None:
        if self.halted:
            return
        now = time.monotonic()
        if self.axis.finish_home_if_done() and self.dialect == "grbl":
            self._finish_grbl_homing()
        if self._waiting is not None:
            if self.axis.moving or self.axis.homing or self.hold:
                if self.dialect == "marlin" and now - self._last_busy >= self.busy_interval_s:
                    self._last_busy = now
                    self.send(b"echo:busy: processing\n")
                return
            line, self._waiting = self._waiting, None
            self._finish_blocked(line)
        while self._queue and self._waiting is None and not self.halted:
            line = self._queue.popleft()
            if self.critical:
                continue  # locked until reset: lines are dropped unanswered
            self._execute(line)

    # ---------------------------------------------------------------- GRBL real-time
    def _realtime(self, ch: bytes) -> None:
        if ch == b"?":
            self._send_status()
        elif ch == b"!":
            if self.axis.moving and not self.axis.homing:
                self._held_target = self.axis.target_mm
                self.axis.stop()
                self.hold = True
        elif ch == b"~":
            if self.hold and self._held_target is not None:
                self.axis.move_to(self._held_target)
            self.hold = False
            self._held_target = None
        elif ch == b"\x18":
            self.resets += 1
            if self.faults.lost_resets > 0:
                self.faults.lost_resets -= 1
                return
            self._soft_reset()

    def _state(self) -> str:
        if self.alarm:
            return "Alarm"
        if self.axis.homing:
            return "Home"
        if self.hold:
            return "Hold:0"
        return "Run" if self.axis.moving else "Idle"

    def _report_units(self, mm: float) -> float:
        return mm / MM_PER_INCH if self.settings[13] else mm

    def _vector(self, value_mm: float, decimals: int | None = None) -> str:
        pos = [0.0, 0.0, 0.0]
        pos[AXES.index(self.axis_letter)] = self._report_units(value_mm)
        d = decimals if decimals is not None else (4 if self.settings[13] else 3)
        return ",".join(f"{p:.{d}f}" for p in pos)

    def _send_status(self) -> None:
        mask = int(self.settings[10])
        mpos_mm = self.axis.position_mm
        fields = [self._state()]
        if mask & 1:
            fields.append(f"MPos:{self._vector(mpos_mm)}")
        else:
            fields.append(f"WPos:{self._vector(mpos_mm - self.wco_mm)}")
        if mask & 2:
            fields.append("Bf:15,128")
        feed = self._report_units(self.axis.speed_mm_s * 60) if self.axis.moving else 0.0
        fields.append(f"FS:{feed:.0f},0")
        if self.pins:
            fields.append("Pn:" + "".join(p for p in "XYZPDHRS" if p in self.pins))
        busy = self.axis.moving or self.axis.homing
        if self._wco_countdown > 0:
            self._wco_countdown -= 1
        else:
            self._wco_countdown = (30 if busy else 10) - 1
            fields.append(f"WCO:{self._vector(self.wco_mm)}")
            self._ovr_countdown = max(self._ovr_countdown, 1)  # never both in one report
        if self._ovr_countdown > 0:
            self._ovr_countdown -= 1
        else:
            self._ovr_countdown = (20 if busy else 10) - 1
            fields.append("Ov:100,100,100")
            if self.coolant:
                fields.append("A:F")
        self.send(("<" + "|".join(fields) + ">\r\n").encode())

    def _soft_reset(self) -> None:
        was_moving = self.axis.moving or self.axis.homing
        self.axis.stop()
        self._queue.clear()
        self._line.clear()
        self._waiting = None
        self.hold = False
        self._held_target = None
        self.absolute = True
        self.inches = False
        self.critical = False
        self._wco_countdown = 0  # the first report after a reset carries WCO
        if was_moving:
            self.axis.homed = False
            self.alarm = True
            self.send(b"ALARM:3\r\n")
        # a reset keeps Idle or Alarm; in Alarm GRBL says how to unlock
        self.send(GRBL_BANNER + (GRBL_LOCKED if self.alarm else b""))

    def _critical_alarm(self, code: int) -> None:
        self.axis.stop()
        self._queue.clear()
        self._waiting = None
        self.alarm = True
        self.critical = True
        self.send(f"ALARM:{code}\r\n".encode() + GRBL_CRITICAL)

    def on_alarm(self) -> None:
        if self.dialect == "grbl" and self.axis.homing:
            self.axis.stop()  # homing fail: the switch was not found; $H gets no ok
            self._waiting = None
            self.alarm = True
            self.send(b"ALARM:9\r\n")
        elif self.dialect == "grbl":
            self.axis.homed = False
            self._critical_alarm(1)  # hard limit: position is likely lost
        else:
            self.axis.stop()
            self._queue.clear()
            self.send(
                f"echo:endstops hit:  {self.axis_letter}:{self.axis.position_mm:.2f}\n".encode()
            )

    def on_limit(self) -> None:
        """The axis presses its limit switch: `Pn` shows it; with `$21=1` it is ALARM:1."""
        self.pins.add(self.axis_letter)
        if self.dialect == "grbl" and not self.settings[21]:
            self.axis.stop()  # the carriage sits on the switch; GRBL does not know
            return
        self.on_alarm()

    # ---------------------------------------------------------------- lines
    def _ok(self) -> None:
        self.send(b"ok\r\n" if self.dialect == "grbl" else b"ok\n")

    def _error(self, code: int) -> None:
        self.send(f"error:{code}\r\n".encode())

    def _execute(self, line: str) -> None:
        line = line.split(";")[0].strip().upper()
        err = self.take_error(line)
        if err is not None:
            if self.dialect == "grbl":
                self.send(f"error:{err}\r\n".encode())
            else:
                self.send(f"Error:{err}\nok\n".encode())
            return
        if self.dialect == "grbl":
            self._execute_grbl(line)
        else:
            self._execute_marlin(line)

    def _words(self, line: str) -> list[tuple[str, float]]:
        return [(k, float(v)) for k, v in _WORD.findall(line.replace(" ", ""))]

    def _system(self, line: str) -> None:
        """GRBL `$` commands, with the state checks of GRBL's system.c."""
        cycle = self.axis.moving or self.axis.homing or self.hold
        if line == "$":
            self.send(
                b"[HLP:$$ $# $G $I $N $x=val $Nx=line $J=line $SLP $C $X $H ~ ! ? ctrl-x]\r\n"
            )
            return self._ok()
        if line == "$G":
            units = "G20" if self.inches else "G21"
            dist = "G90" if self.absolute else "G91"
            coolant = "M8" if self.coolant else "M9"
            self.send(f"[GC:G0 G54 G17 {units} {dist} G94 M5 {coolant} T0 F0 S0]\r\n".encode())
            return self._ok()
        if line == "$X":
            if self.alarm:
                self.alarm = False
                self.send(b"[MSG:Caution: Unlocked]\r\n")
            return self._ok()
        if cycle:
            return self._error(8)  # everything else needs Idle or Alarm
        if line == "$H":
            if not self.homing_enabled:
                return self._error(5)
            self.alarm = False
            self.pins.discard(self.axis_letter)
            self.axis.start_home()
            self.axis.move_to(-float(self.settings[27]))  # seek the switch, pull off
            self.motion_started()
            self._waiting = line
            return None
        if line == "$I":
            self.send(b"[VER:1.1h.20190825:]\r\n[OPT:V,15,128]\r\n")
            return self._ok()
        if line == "$$":
            text = "".join(f"${k}={_fmt_setting(k, v)}\r\n" for k, v in self.settings.items())
            self.send(text.encode())
            return self._ok()
        if line == "$#":
            zero = self._vector(0.0)
            self.send(
                (
                    f"[G54:{self._vector(self.wco_mm)}]\r\n"
                    + "".join(f"[G{n}:{zero}]\r\n" for n in (55, 56, 57, 58, 59, 28, 30, 92))
                    + f"[TLO:{0.0:.3f}]\r\n[PRB:{zero}:0]\r\n"
                ).encode()
            )
            return self._ok()
        m = re.fullmatch(r"\$(\d+)=([-+]?\d*\.?\d+)", line)
        if m:
            key = int(m.group(1))
            if key not in self.settings:
                return self._error(3)
            self.settings[key] = float(m.group(2))
            return self._ok()
        if re.fullmatch(r"\$\d+", line):
            return self._error(3)
        return self._error(2)  # `$Q`: a letter where GRBL expects a number

    def _execute_grbl(self, line: str) -> None:
        if line == "":
            return self._ok()
        if line.startswith("$"):
            return self._system(line)
        words = self._words(line)
        if not words or not line[0].isalpha():
            return self._error(1)
        if any(k not in _GRBL_LETTERS for k, _ in words):
            return self._error(20)
        gs = [v for k, v in words if k == "G"]
        ms = [v for k, v in words if k == "M"]
        if any(g not in _GRBL_G for g in gs) or any(m not in _GRBL_M for m in ms):
            return self._error(20)
        if self.alarm:
            return self._error(9)
        if 8 in ms:
            self.coolant = True
        if 9 in ms:
            self.coolant = False
        if 20 in gs:
            self.inches = True
        if 21 in gs:
            self.inches = False
        self._modal_move(line, words)
        return None

    def _modal_move(self, line: str, words: list[tuple[str, float]]) -> None:
        gs = [v for k, v in words if k == "G"]
        if 90 in gs:
            self.absolute = True
        if 91 in gs:
            self.absolute = False
        if 4 in gs:  # dwell: the reply waits for the planner to empty
            self._waiting = line
            return
        if 28 in gs:
            self.axis.start_home()
            self._waiting = line
            return
        scale = MM_PER_INCH if self.dialect == "grbl" and self.inches else 1.0
        target = [v * scale for k, v in words if k == self.axis_letter]
        if not target:
            return self._ok()
        if self.axis.moving or self.hold:  # planner "full": answer when this one ends
            self._queue.appendleft(line)
            self._waiting = "REQUEUE"
            return
        base = self.wco_mm if self.dialect == "grbl" else 0.0
        goal = base + target[0] if self.absolute else self.axis.position_mm + target[0]
        feed = [v * scale for k, v in words if k == "F"]
        speed = self.axis.speed_mm_s if 0 in gs or not feed else feed[0] / 60.0
        if (
            self.dialect == "grbl"
            and self.settings[20]
            and not (self.axis.min_mm <= goal <= self.axis.max_mm)
        ):
            self._critical_alarm(2)  # soft limit: nothing moved, position retained
            return
        self.pins.discard(self.axis_letter)
        self.axis.move_to(goal, speed)
        self.motion_started()
        self._ok()

    def _finish_grbl_homing(self) -> None:
        self.alarm = False
        self._wco_countdown = 0

    def _finish_blocked(self, line: str) -> None:
        if line == "REQUEUE":
            return  # the move waits at the head of the queue; tick() runs it now
        if self.dialect == "grbl" and self.alarm:
            return  # an alarm swallowed the reply
        self._ok()

    def _execute_marlin(self, line: str) -> None:
        if line.startswith("N"):  # line number and checksum: accept and strip
            line = re.sub(r"^N\d+\s*", "", line).split("*")[0].strip()
        cmd = line.split(" ")[0] if line else ""
        if cmd in ("G0", "G1", "G90", "G91", "G21", "G4", "G28"):
            self._modal_move(line, self._words(line))
            return
        if cmd == "M400":
            self._waiting = line
            self._last_busy = time.monotonic()
            return
        if cmd == "M114":
            p = self.axis.target_mm
            vals = {a: 0.0 for a in AXES}
            vals[self.axis_letter] = p
            self.send(
                f"X:{vals['X']:.3f} Y:{vals['Y']:.3f} Z:{vals['Z']:.3f} E:0.00 "
                f"Count X:0 Y:0 Z:{round(p * 400)}\n".encode()
            )
            return self._ok()
        if cmd == "M410":
            self.axis.stop()
            return self._ok()
        if cmd == "M112":
            self.axis.stop()
            self.halted = True
            self.send(b"Error:Printer halted. kill() called!\n")
            return
        if cmd in ("M115", "M110", "M17", "M18", "M84", ""):
            if cmd == "M115":
                self.send(b"FIRMWARE_NAME:Marlin 2.1.2 (emulated)\n")
            return self._ok()
        self.send(f'echo:Unknown command: "{line}"\n'.encode())
        self._ok()
