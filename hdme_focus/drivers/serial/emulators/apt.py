"""An emulated Thorlabs KDC101 (DC servo K-Cube) speaking the binary APT protocol on a pty.

Answers status requests, moves on MOVE_ABSOLUTE and reports MOVE_COMPLETED,
homes on MOVE_HOME (MOVE_HOMED), stops on MOVE_STOP (MOVE_STOPPED). An armed
error answers with HW_RICHRESPONSE; an armed alarm stops the move with the
motion-error bit and MOVE_STOPPED.
"""

from __future__ import annotations

import struct

from hdme_focus.drivers.serial import apt_protocol as apt
from hdme_focus.drivers.serial.emulators.base import EmulatedAxis, Faults, PtyEmulator

Z8_COUNTS_PER_MM = 34304.0


class AptEmulator(PtyEmulator):
    name = "apt-emulator"

    def __init__(
        self,
        axis: EmulatedAxis | None = None,
        faults: Faults | None = None,
        counts_per_mm: float = Z8_COUNTS_PER_MM,
        address: int = apt.USB_UNIT,
    ) -> None:
        super().__init__(axis or EmulatedAxis(min_mm=0.0, max_mm=25.0), faults)
        self.counts_per_mm = counts_per_mm
        self.address = address
        self.enabled = True
        self.motion_error = False
        self.limit_bits = 0  # a pressed limit switch (CW/CCW_HW_LIMIT) until the next move
        self._buf = bytearray()
        self._pending: str | None = None  # "move" or "home": report when motion ends

    # ------------------------------------------------------------- replies
    def status(self) -> apt.Status:
        bits = apt.MOTOR_CONNECTED
        if self.enabled:
            bits |= apt.CHANNEL_ENABLED
        if self.axis.homed:
            bits |= apt.HOMED
        if self.axis.homing:
            bits |= apt.HOMING
        elif self.axis.moving:
            up = self.axis.target_mm > self.axis.position_mm
            bits |= apt.MOVING_CW if up else apt.MOVING_CCW
        if self.motion_error:
            bits |= apt.MOTION_ERROR
        bits |= self.limit_bits
        counts = round(self.axis.position_mm * self.counts_per_mm)
        return apt.Status(1, counts, bits)

    def _send_data(self, msg_id: int, data: bytes) -> None:
        self.send(apt.with_data(msg_id, data, dest=apt.HOST, source=self.address))

    def _send_header(self, msg_id: int, p1: int = 1, p2: int = 0) -> None:
        self.send(apt.header(msg_id, p1, p2, dest=apt.HOST, source=self.address))

    # ------------------------------------------------------------- input
    def on_bytes(self, data: bytes) -> None:
        self._buf.extend(data)
        while len(self._buf) >= 6:
            msg_id = struct.unpack_from("<H", self._buf)[0]
            if self._buf[4] & apt.HAS_DATA:
                length = struct.unpack_from("<H", self._buf, 2)[0]
                if len(self._buf) < 6 + length:
                    return
                payload = bytes(self._buf[6 : 6 + length])
                p1 = p2 = 0
                del self._buf[: 6 + length]
            else:
                p1, p2 = self._buf[2], self._buf[3]
                payload = b""
                del self._buf[:6]
            self._handle(msg_id, p1, p2, payload)

    def _handle(self, msg_id: int, p1: int, p2: int, data: bytes) -> None:
        name = apt.NAMES.get(msg_id, f"0x{msg_id:04X}")
        err = self.take_error(name)
        if err is not None:
            code = err if isinstance(err, int) else 1
            notes = str(err) if isinstance(err, str) else f"error {err}"
            payload = struct.pack("<HH64s", msg_id, code, notes.encode()[:64])
            self._send_data(apt.HW_RICHRESPONSE, payload)
            return
        if msg_id == apt.MOT_REQ_DCSTATUSUPDATE:
            self._send_data(apt.MOT_GET_DCSTATUSUPDATE, self.status().pack())
        elif msg_id == apt.MOT_REQ_POSCOUNTER:
            counts = round(self.axis.position_mm * self.counts_per_mm)
            self._send_data(apt.MOT_GET_POSCOUNTER, struct.pack("<Hi", 1, counts))
        elif msg_id == apt.MOD_SET_CHANENABLESTATE:
            self.enabled = p2 == 0x01
        elif msg_id == apt.HW_REQ_INFO:
            info = struct.pack(
                "<I8sH4s48s12sHHH", 27000001, b"KDC101", 16, b"\x01\x02\x03\x00",
                b"emulated", b"", 1, 0, 1,
            )  # fmt: skip
            self._send_data(apt.HW_GET_INFO, info)
        elif msg_id == apt.MOT_MOVE_ABSOLUTE and self.enabled:
            _chan, counts = struct.unpack("<Hi", data[:6])
            self.motion_error = False
            self.limit_bits = 0
            self.axis.move_to(counts / self.counts_per_mm)
            self._pending = "move"
            self.motion_started()
        elif msg_id == apt.MOT_MOVE_HOME and self.enabled:
            self.motion_error = False
            self.axis.start_home()
            self._pending = "home"
            self.motion_started()
        elif msg_id == apt.MOT_MOVE_STOP:
            self.axis.stop()
            self._pending = None
            self._send_data(apt.MOT_MOVE_STOPPED, self.status().pack())
        # HW_NO_FLASH_PROGRAMMING, update-message and disconnect requests need no answer

    def tick(self) -> None:
        if self._pending == "home" and self.axis.finish_home_if_done():
            self._pending = None
            self._send_header(apt.MOT_MOVE_HOMED)
        elif self._pending == "move" and not self.axis.moving:
            self._pending = None
            self._send_data(apt.MOT_MOVE_COMPLETED, self.status().pack())

    def on_alarm(self) -> None:
        self.axis.stop()
        self.motion_error = True
        self._pending = None
        self._send_data(apt.MOT_MOVE_STOPPED, self.status().pack())

    def on_limit(self) -> None:
        """The carriage trips the limit switch ahead of it: the controller stops the move."""
        self.limit_bits = (
            apt.CW_HW_LIMIT if self.axis.target_mm > self.axis.position_mm else (apt.CCW_HW_LIMIT)
        )
        self.axis.stop()
        self._pending = None
        self._send_data(apt.MOT_MOVE_STOPPED, self.status().pack())
