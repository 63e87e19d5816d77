"""Thorlabs APT/Kinesis motor controllers (KDC101 with Z8-series actuators and kin).

The binary APT protocol at 115200 8N1 with RTS/CTS: MOVE_ABSOLUTE (0x0453)
answered by MOVE_COMPLETED (0x0464); MOVE_HOME / MOVE_HOMED; MOVE_STOP /
MOVE_STOPPED; status requests (0x0490 -> 0x0491) polled during a wait so a
silent controller is noticed within the reply timeout; HW_RESPONSE /
HW_RICHRESPONSE (0x0080 / 0x0081) raise `AptError`.
"""

from __future__ import annotations

import contextlib
import logging
import struct
import time

from hdme_focus.config import AptStageConfig, ConfigError
from hdme_focus.drivers.base import (
    Clock,
    CommunicationError,
    DeviceError,
    NotHomedError,
    RealClock,
    StageFault,
    StageTimeout,
)
from hdme_focus.drivers.serial import apt_protocol as apt
from hdme_focus.drivers.serial.link import SerialLink
from hdme_focus.drivers.serial.poll import await_completion

log = logging.getLogger(__name__)

Z8_COUNTS_PER_MM = 34304.0
Message = tuple[int, int, int, bytes]  # id, param1, param2, data


class AptError(StageFault):
    """The controller sent HW_RESPONSE or HW_RICHRESPONSE."""

    def __init__(self, text: str, code: int | None = None) -> None:
        self.code = code
        super().__init__(text)


class AptStage:
    """One channel of an APT motor controller; positions are encoder counts / counts_per_mm."""

    def __init__(
        self,
        link: SerialLink,
        *,
        counts_per_mm: float = Z8_COUNTS_PER_MM,
        dest: int = apt.USB_UNIT,
        channel: int = 1,
        allow_unhomed: bool = False,
        move_timeout_s: float = 30.0,
        home_timeout_s: float = 120.0,
        poll_s: float = 0.05,
        clock: Clock | None = None,
    ) -> None:
        self.link = link
        self.counts_per_mm = float(counts_per_mm)
        self.dest = dest
        self.channel = channel
        self.allow_unhomed = allow_unhomed
        self.move_timeout_s = float(move_timeout_s)
        self.home_timeout_s = float(home_timeout_s)
        self.poll_s = float(poll_s)
        self.clock: Clock = clock or RealClock()
        self.tolerance_counts = max(3, round(self.counts_per_mm * 0.0005))  # 0.5 um
        self._target: int | None = None
        try:
            self.link.write(apt.header(apt.HW_NO_FLASH_PROGRAMMING, dest=dest))
            self.link.write(apt.header(apt.MOD_SET_CHANENABLESTATE, channel, 0x01, dest=dest))
            self.status()
        except CommunicationError as exc:
            link.close()
            raise CommunicationError(
                f"{exc} [is it an APT controller (KDC101, TDC001...) at 115200 baud "
                "(stage.serial.baudrate)?]"
            ) from None
        except BaseException:
            link.close()
            raise

    def describe(self) -> str:
        return f"APT controller channel {self.channel} on {self.link.port}"

    # ------------------------------------------------------------- framing
    def _send(self, msg_id: int, p1: int = 0, p2: int = 0) -> None:
        self.link.write(apt.header(msg_id, p1, p2, dest=self.dest))

    def _read(self, timeout_s: float) -> Message | None:
        """One message, or None if none starts within timeout_s. Checks the header."""
        head = self.link.read_exact(6, timeout_s)
        if head is None:
            return None
        msg_id = struct.unpack_from("<H", head)[0]
        expected = apt.INCOMING.get(msg_id, -1)
        has_data = bool(head[4] & apt.HAS_DATA)
        if (
            expected == -1
            or (head[4] & ~apt.HAS_DATA) != apt.HOST
            or has_data != (expected is not None)
        ):
            self.link.drain()
            raise self.link.garbled(head)
        if not has_data:
            return msg_id, head[2], head[3], b""
        length = struct.unpack_from("<H", head, 2)[0]
        if length != expected:
            self.link.drain()
            raise self.link.garbled(head)
        data = self.link.read_exact(length, self.link.timeout_s)
        if data is None:
            raise CommunicationError(
                f"truncated {apt.NAMES.get(msg_id, hex(msg_id))} from the APT controller "
                f"on {self.link.port}"
            )
        return msg_id, 0, 0, data

    def _check(self, msg: Message) -> apt.Status | None:
        """Raise on controller errors; return the status a message carries, if any."""
        msg_id, _p1, _p2, data = msg
        if msg_id == apt.HW_RESPONSE:
            raise AptError(f"{self.describe()} reported an error (HW_RESPONSE)")
        if msg_id == apt.HW_RICHRESPONSE:
            about, code, notes = struct.unpack("<HH64s", data)
            text = notes.split(b"\0")[0].decode("ascii", "replace").strip()
            what = apt.NAMES.get(about, f"message 0x{about:04X}")
            raise AptError(f"{self.describe()} reported error {code} about {what}: {text}", code)
        if msg_id in (apt.MOT_GET_DCSTATUSUPDATE, apt.MOT_MOVE_COMPLETED, apt.MOT_MOVE_STOPPED):
            return apt.Status.unpack(data)
        return None

    def status(self) -> apt.Status:
        self._send(apt.MOT_REQ_DCSTATUSUPDATE, self.channel)
        deadline = time.monotonic() + self.link.timeout_s
        try:
            while True:
                msg = self._read(max(0.0, deadline - time.monotonic()))
                if msg is None:
                    raise self.link.no_reply("a status request (0x0490)")
                st = self._check(msg)
                if msg[0] == apt.MOT_GET_DCSTATUSUPDATE and st is not None:
                    return st
        except DeviceError:
            self.link.drain()
            raise

    # ------------------------------------------------------------- Stage protocol
    def position_mm(self) -> float:
        return self.status().position_counts / self.counts_per_mm

    def is_homed(self) -> bool:
        return self.status().homed

    def is_moving(self) -> bool:
        return self.status().moving

    def move_to(self, target_mm: float) -> None:
        st = self.status()
        if not st.homed and not self.allow_unhomed:
            raise NotHomedError(
                f"{self.describe()} is not homed: run `hdme-focus stage home`, or set "
                "stage.allow_unhomed = true to move without homing"
            )
        counts = round(float(target_mm) * self.counts_per_mm)
        data = struct.pack("<Hi", self.channel, counts)
        self.link.write(apt.with_data(apt.MOT_MOVE_ABSOLUTE, data, dest=self.dest))
        self._target = counts

    def _await(self, done_id: int, timeout_s: float, what: str, setting: str) -> None:
        """Wait for done_id while polling status; errors, silence and the deadline raise."""

        def timed_out() -> BaseException:
            self.stop()
            return StageTimeout(
                f"{what} on {self.describe()} did not complete within {timeout_s:g} s "
                f"({setting}); the stage was stopped"
            )

        def done(msg: Message) -> bool:
            return self._finished(msg[0], self._check(msg), done_id, what)

        try:
            await_completion(
                clock=self.clock,
                timeout_s=timeout_s,
                poll_s=self.poll_s,
                silence_s=self.link.timeout_s,
                poll=lambda: self._send(apt.MOT_REQ_DCSTATUSUPDATE, self.channel),
                read=self._read,
                done=done,
                timed_out=timed_out,
                silent=lambda: self.link.no_reply(f"status requests during {what}"),
            )
        except DeviceError:
            self.link.drain()
            raise

    def _finished(self, msg_id: int, st: apt.Status | None, done_id: int, what: str) -> bool:
        if msg_id == done_id == apt.MOT_MOVE_HOMED:
            return True
        if st is None:
            return False
        if st.bits & apt.MOTION_ERROR or msg_id == apt.MOT_MOVE_STOPPED:
            self.stop()
            problems = ", ".join(st.problems()) or "stopped by the controller"
            raise StageFault(
                f"{self.describe()}: {what} stopped at "
                f"{st.position_counts / self.counts_per_mm:.4f} mm before completing: {problems}"
            )
        if msg_id == done_id == apt.MOT_MOVE_COMPLETED:
            if self._target is not None and (
                abs(st.position_counts - self._target) > self.tolerance_counts
            ):
                log.warning(
                    "%s: move completed %d counts from its target",
                    self.describe(),
                    st.position_counts - self._target,
                )
            return True
        return False

    def wait(self, timeout_s: float) -> None:
        if self._target is None:
            return
        self._await(apt.MOT_MOVE_COMPLETED, timeout_s, "move", "stage.move_timeout_s")
        self._target = None

    def home(self, timeout_s: float | None = None) -> None:
        self._send(apt.MOT_MOVE_HOME, self.channel)
        t = self.home_timeout_s if timeout_s is None else timeout_s
        self._await(apt.MOT_MOVE_HOMED, t, "homing", "stage.home_timeout_s")

    def stop(self) -> None:
        """Profiled MOVE_STOP, then wait (bounded) for MOVE_STOPPED. Never raises."""
        self._target = None
        if self.link.dead:
            log.warning("stop: %s is disconnected; nothing to stop", self.link.port)
            return
        try:
            self._send(apt.MOT_MOVE_STOP, self.channel, apt.STOP_PROFILED)
            end = time.monotonic() + self.link.timeout_s
            while (left := end - time.monotonic()) > 0:
                try:
                    msg = self._read(left)
                except CommunicationError:
                    if self.link.dead:
                        raise
                    continue
                if msg is None or msg[0] == apt.MOT_MOVE_STOPPED:
                    break
            self.link.drain(quiet_s=0.02, max_s=0.2)
        except DeviceError as exc:
            log.warning("stop: %s", exc)

    def close(self) -> None:
        if not self.link.dead:
            with contextlib.suppress(CommunicationError):
                self._send(apt.HW_DISCONNECT)
        self.link.close()


def open_apt_stage(cfg: AptStageConfig) -> AptStage:
    if not cfg.axis.strip().isdigit():
        raise ConfigError(
            f'stage.axis = {cfg.axis!r}: an APT channel is a number; use "1" for a K-Cube or T-Cube'
        )
    # device_address 1 (the default) means the USB unit itself; bay addresses are 0x21, 0x22...
    dest = apt.USB_UNIT if cfg.device_address in (0, 1) else cfg.device_address
    # the APT protocol requires RTS/CTS handshaking
    link = SerialLink.from_config(cfg.serial, name="APT controller", rtscts=True)
    return AptStage(
        link,
        counts_per_mm=cfg.steps_per_mm or Z8_COUNTS_PER_MM,
        dest=dest,
        channel=int(cfg.axis),
        allow_unhomed=cfg.allow_unhomed,
        move_timeout_s=cfg.move_timeout_s,
        home_timeout_s=cfg.home_timeout_s,
    )
