"""An emulated Zaber device speaking the ASCII protocol on a pty.

Commands `/<device> <axis> <command>`; replies `@01 1 OK IDLE -- 0`,
rejections `@01 1 RJ IDLE -- BADDATA`, warning flags (WR until homed, NI after
an interrupted move, FS after an injected stall) shown highest priority first.
"""

from __future__ import annotations

from hdme_focus.drivers.serial.emulators.base import EmulatedAxis, Faults, PtyEmulator

_PRIORITY = {"F": 0, "W": 1, "N": 2}


class ZaberEmulator(PtyEmulator):
    name = "zaber-emulator"

    def __init__(
        self,
        axis: EmulatedAxis | None = None,
        faults: Faults | None = None,
        device: int = 1,
        axis_number: int = 1,
        steps_per_mm: float = 10000.0,
    ) -> None:
        super().__init__(axis, faults)
        self.device = device
        self.axis_number = axis_number
        self.steps_per_mm = steps_per_mm
        self.flags: set[str] = set()  # stored (clearable) flags
        self._line = bytearray()

    def active_flags(self) -> list[str]:
        flags = set(self.flags)
        if not self.axis.homed:
            flags.add("WR")
        return sorted(flags, key=lambda f: (_PRIORITY.get(f[0], 3), f))

    def _steps(self, mm: float) -> int:
        return round(mm * self.steps_per_mm)

    def _reply(self, axis: int, ok: bool, data: str) -> None:
        flags = self.active_flags()
        status = "BUSY" if self.axis.moving else "IDLE"
        flag = flags[0] if flags else "--"
        verdict = "OK" if ok else "RJ"
        self.send(f"@{self.device:02d} {axis} {verdict} {status} {flag} {data}\r\n".encode())

    def on_bytes(self, data: bytes) -> None:
        for byte in data:
            if byte in b"\r\n":
                if self._line:
                    self._handle(self._line.decode("ascii", "replace"))
                    self._line.clear()
            else:
                self._line.append(byte)

    def tick(self) -> None:
        self.axis.finish_home_if_done()

    def on_alarm(self) -> None:
        self.axis.stop()
        self.flags.add("FS")

    def on_limit(self) -> None:
        """An unexpected limit trigger: the axis stops and shows WL until cleared."""
        self.axis.stop()
        self.flags.add("WL")

    def _handle(self, line: str) -> None:
        line = line.strip()
        if not line.startswith("/"):
            return
        parts = line[1:].split()
        device = axis = 0
        if parts and parts[0].isdigit():
            device = int(parts.pop(0))
            if parts and parts[0].isdigit():
                axis = int(parts.pop(0))
        if device not in (0, self.device):
            return
        if axis not in (0, self.axis_number):
            self._reply(axis, False, "BADAXIS")
            return
        cmd = " ".join(parts)
        err = self.take_error(cmd)
        if err is not None:
            self._reply(axis, False, str(err))
            return
        self._execute(axis, cmd, parts)

    def _execute(self, axis: int, cmd: str, parts: list[str]) -> None:
        if cmd == "":
            self._reply(axis, True, "0")
        elif cmd == "get pos":
            self._reply(axis, True, str(self._steps(self.axis.position_mm)))
        elif cmd in ("warnings", "warnings clear"):
            flags = self.active_flags()
            self._reply(axis, True, " ".join([f"{len(flags):02d}", *flags]))
            if cmd == "warnings clear":
                self.flags.clear()
        elif cmd == "stop":
            if self.axis.moving:
                self.flags.add("NI")
            self.axis.stop()
            self._reply(axis, True, "0")
        elif cmd == "home":
            if self.axis.moving:
                self.flags.add("NI")
            self.axis.start_home()
            self.motion_started()
            self._reply(axis, True, "0")
        elif parts[:1] == ["move"] and len(parts) == 3 and parts[1] in ("abs", "rel"):
            try:
                steps = int(parts[2])
            except ValueError:
                self._reply(axis, False, "BADDATA")
                return
            goal_mm = steps / self.steps_per_mm
            if parts[1] == "rel":
                goal_mm += self.axis.position_mm
            if not self.axis.min_mm <= goal_mm <= self.axis.max_mm:
                self._reply(axis, False, "BADDATA")
                return
            if self.axis.moving:
                self.flags.add("NI")
            self.axis.move_to(goal_mm)
            self.motion_started()
            self._reply(axis, True, "0")
        else:
            self._reply(axis, False, "BADCOMMAND")
