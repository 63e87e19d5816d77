"""An emulated GRBL 1.1 or Marlin 2 controller with one moving axis.

GRBL: `ok` / `error:N` / `ALARM:N`, real-time `?` `!` `~` and 0x18, `$H`, `$X`,
`G4 P0` answered when the planner is empty, homing lock (boots in Alarm until
homed). Marlin: `ok`, `M400`, `M114`, `G28`, `M410` acted on at once (emergency
parser), `echo:busy: processing` keep-alives, `echo:endstops hit:` on a fault.
"""

from __future__ import annotations

import re
import time
from collections import deque

from hdme_focus.drivers.serial.emulators.base import EmulatedAxis, Faults, PtyEmulator

GRBL_BANNER = b"\r\nGrbl 1.1h ['$' for help]\r\n"
GRBL_LOCKED = b"[MSG:'$H'|'$X' to unlock]\r\n"
_WORD = re.compile(r"([A-Z])\s*([-+]?(?:\d+\.?\d*|\.\d+))")
AXES = "XYZ"


class GcodeEmulator(PtyEmulator):
    """GRBL or Marlin on a pty; `axis_letter` is the emulated axis (others stay at 0)."""

    def __init__(
        self,
        dialect: str = "grbl",
        axis: EmulatedAxis | None = None,
        faults: Faults | None = None,
        axis_letter: str = "Z",
        homing_enabled: bool = True,
        busy_interval_s: float = 2.0,
    ) -> None:
        if dialect not in ("grbl", "marlin"):
            raise ValueError(f"dialect must be 'grbl' or 'marlin', got {dialect!r}")
        self.name = f"{dialect}-emulator"
        super().__init__(axis, faults)
        self.dialect = dialect
        self.axis_letter = axis_letter.upper()
        self.homing_enabled = homing_enabled
        self.busy_interval_s = busy_interval_s
        self._line = bytearray()
        self._queue: deque[str] = deque()
        self._waiting: str | None = None  # command blocked until motion ends
        self._last_busy = 0.0
        self.absolute = True
        self.hold = False
        self.alarm = dialect == "grbl" and homing_enabled and not self.axis.homed
        self.halted = False
        self._status_count = 0

    # ---------------------------------------------------------------- input
    def on_bytes(self, data: bytes) -> None:
        for byte in data:
            ch = bytes([byte])
            if self.dialect == "grbl" and ch in (b"?", b"!", b"~", b"\x18"):
                self._realtime(ch)
                continue
            if ch in (b"\n", b"\r"):
                if self._line:
                    line = self._line.decode("ascii", "replace").strip()
                    self._line.clear()
                    if self.dialect == "marlin" and line.upper().startswith("M410"):
                        self.axis.stop()  # emergency parser: acted on before the queue
                    self._queue.append(line)
                elif ch == b"\n" and self.dialect == "grbl":
                    self._queue.append("")
            else:
                self._line.extend(ch)

    def tick(self) -> None:
        if self.halted:
            return
        now = time.monotonic()
        if self.axis.finish_home_if_done() and self.dialect == "grbl":
            self.alarm = False
        if self._waiting is not None:
            if self.axis.moving or self.axis.homing or self.hold:
                if self.dialect == "marlin" and now - self._last_busy >= self.busy_interval_s:
                    self._last_busy = now
                    self.send(b"echo:busy: processing\n")
                return
            line, self._waiting = self._waiting, None
            self._finish_blocked(line)
        while self._queue and self._waiting is None and not self.halted:
            self._execute(self._queue.popleft())

    # ---------------------------------------------------------------- GRBL real-time
    def _realtime(self, ch: bytes) -> None:
        if ch == b"?":
            self._send_status()
        elif ch == b"!":
            if self.axis.moving and not self.axis.homing:
                self.axis.stop()
                self.hold = True
        elif ch == b"~":
            self.hold = False
        elif ch == b"\x18":
            self._soft_reset()

    def _state(self) -> str:
        if self.alarm:
            return "Alarm"
        if self.axis.homing:
            return "Home"
        if self.hold:
            return "Hold:0"
        return "Run" if self.axis.moving else "Idle"

    def _send_status(self) -> None:
        pos = [0.0, 0.0, 0.0]
        pos[AXES.index(self.axis_letter)] = self.axis.position_mm
        mpos = ",".join(f"{p:.3f}" for p in pos)
        self._status_count += 1
        wco = "|WCO:0.000,0.000,0.000" if self._status_count % 10 == 1 else ""
        feed = self.axis.speed_mm_s * 60 if self.axis.moving else 0
        self.send(f"<{self._state()}|MPos:{mpos}|FS:{feed:.0f},0{wco}>\r\n".encode())

    def _soft_reset(self) -> None:
        was_moving = self.axis.moving
        self.axis.stop()
        self._queue.clear()
        self._line.clear()
        self._waiting = None
        self.hold = False
        self.absolute = True
        if was_moving:
            self.axis.homed = False
            self.alarm = True
            self.send(b"ALARM:3\r\n")
        # as in GRBL, only power-up locks an unhomed machine; a reset keeps Idle or Alarm
        self.send(GRBL_BANNER + (GRBL_LOCKED if self.alarm else b""))

    def on_alarm(self) -> None:
        self.axis.stop()
        self._queue.clear()
        if self.dialect == "grbl":
            self._waiting = None
            self.alarm = True
            self.axis.homed = False
            self.send(b"ALARM:1\r\n[MSG:Reset to continue]\r\n")
        else:
            self.send(
                f"echo:endstops hit:  {self.axis_letter}:{self.axis.position_mm:.2f}\n".encode()
            )

    # ---------------------------------------------------------------- lines
    def _ok(self) -> None:
        self.send(b"ok\r\n" if self.dialect == "grbl" else b"ok\n")

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

    def _execute_grbl(self, line: str) -> None:
        if line == "":
            return self._ok()
        if line.startswith("$"):
            if line == "$H":
                if not self.homing_enabled:
                    self.send(b"error:5\r\n")
                    return
                self.alarm = False
                self.axis.start_home()
                self._waiting = line
                return
            if line == "$X":
                if self.alarm:
                    self.alarm = False
                    self.send(b"[MSG:Caution: Unlocked]\r\n")
                return self._ok()
            if line in ("$I", "$$", "$G", "$#"):
                if line == "$I":
                    self.send(b"[VER:1.1h.20190825:]\r\n[OPT:V,15,128]\r\n")
                return self._ok()
            self.send(b"error:3\r\n")
            return
        words = self._words(line)
        if not words or any(k not in "GMFXYZPNS" for k, _ in words):
            self.send(b"error:20\r\n" if words else b"error:1\r\n")
            return
        if self.alarm:
            self.send(b"error:9\r\n")
            return
        self._modal_move(line, words)

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
        target = [v for k, v in words if k == self.axis_letter]
        if not target:
            return self._ok()
        if self.axis.moving or self.hold:  # planner "full": answer when this one ends
            self._queue.appendleft(line)
            self._waiting = "REQUEUE"
            return
        goal = target[0] if self.absolute else self.axis.position_mm + target[0]
        feed = [v for k, v in words if k == "F"]
        speed = self.axis.speed_mm_s if 0 in gs or not feed else feed[0] / 60.0
        if self.dialect == "grbl" and not self.axis.min_mm <= goal <= self.axis.max_mm:
            self.alarm = True
            self.send(b"ALARM:2\r\n")
            return
        self.axis.move_to(goal, speed)
        self.motion_started()
        self._ok()

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
