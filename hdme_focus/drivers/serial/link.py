"""A serial port opened exclusively, read against deadlines, failing with typed errors.

Shared by the G-code, Zaber and APT drivers so each of them only speaks its
protocol. Every read has a deadline (nothing waits forever), a second process
opening the same port gets `PortBusyError`, and a vanished device becomes one
`CommunicationError` instead of a pyserial traceback.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import time
from pathlib import Path
from typing import Any

import serial

from hdme_focus.config import ConfigError, SerialConfig
from hdme_focus.drivers.base import CommunicationError, PortBusyError

log = logging.getLogger(__name__)

# What a vanished device raises: tcdrain's termios.error is not an OSError.
_LOST: tuple[type[BaseException], ...] = (serial.SerialException, OSError)
try:
    import termios

    _LOST += (termios.error,)
except ImportError:  # pragma: no cover - Windows has no termios
    pass

POLL_S = 0.01  # pyserial's own read timeout: how often a deadline is checked
LIST_PORTS_HINT = "list ports with: python -m serial.tools.list_ports"


class SerialLink:
    """One exclusively opened serial port with deadline-based reads.

    `name` names the controller in messages ("GRBL", "Zaber", ...). After the
    device disappears, `dead` is True and every call raises CommunicationError.
    """

    def __init__(
        self,
        port: str | None,
        baudrate: int = 115200,
        timeout_s: float = 2.0,
        rtscts: bool = False,
        *,
        name: str = "controller",
        serial_factory: Any = serial.Serial,
    ) -> None:
        if not port:
            raise ConfigError(
                f"stage.serial.port is not set: give the {name}'s port, e.g. /dev/ttyUSB0 or "
                f"COM3 ({LIST_PORTS_HINT}; or try `hdme-focus emulate`)"
            )
        self.port = port
        self.name = name
        self.timeout_s = float(timeout_s)
        self.dead = False
        self._buf = bytearray()
        try:
            self._ser = serial_factory(
                port,
                baudrate,
                timeout=POLL_S,
                write_timeout=max(self.timeout_s, 0.5),
                rtscts=rtscts,
                exclusive=True,
            )
        except serial.SerialException as exc:
            raise _open_error(port, name, exc) from None

    @classmethod
    def from_config(cls, cfg: SerialConfig, *, name: str, rtscts: bool | None = None) -> SerialLink:
        """The link `[stage.serial]` describes; `rtscts` overrides it where a protocol demands."""
        return cls(
            cfg.port,
            cfg.baudrate,
            cfg.timeout_s,
            cfg.rtscts if rtscts is None else rtscts,
            name=name,
        )

    # ----------------------------------------------------------------- writing
    def write(self, data: bytes) -> None:
        self._check_alive()
        try:
            self._ser.write(data)
            self._ser.flush()
        except serial.SerialTimeoutException:
            raise CommunicationError(
                f"writing to the {self.name} on {self.port} timed out "
                "(flow control: check stage.serial.rtscts and the cable)"
            ) from None
        except _LOST as exc:
            raise self._lost(exc) from None

    def write_line(self, text: str, eol: str = "\n") -> None:
        self.write((text + eol).encode("ascii"))

    # ----------------------------------------------------------------- reading
    def _fill(self, deadline: float) -> bool:
        """Read what is available (waiting at most until deadline); True if bytes came."""
        self._check_alive()
        if time.monotonic() >= deadline:
            return False
        try:
            waiting = self._ser.in_waiting
            data = self._ser.read(max(1, waiting))
        except _LOST as exc:
            raise self._lost(exc) from None
        if data:
            self._buf.extend(data)
            return True
        return False

    def read_line(self, timeout_s: float | None = None) -> str | None:
        """Next line without its line ending, or None when none completes in time.

        Bytes that are not ASCII raise CommunicationError (usually a wrong baud rate).
        """
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                raw = bytes(self._buf[: nl + 1])
                del self._buf[: nl + 1]
                try:
                    return raw.decode("ascii").strip("\r\n")
                except UnicodeDecodeError:
                    raise self.garbled(raw) from None
            if not self._fill(deadline) and time.monotonic() >= deadline:
                return None

    def read_exact(self, n: int, timeout_s: float | None = None) -> bytes | None:
        """Exactly n bytes, or None when fewer than n arrive in time (they stay buffered)."""
        deadline = time.monotonic() + (self.timeout_s if timeout_s is None else timeout_s)
        while len(self._buf) < n:
            if not self._fill(deadline) and time.monotonic() >= deadline:
                return None
        out = bytes(self._buf[:n])
        del self._buf[:n]
        return out

    def drain(self, quiet_s: float = 0.05, max_s: float = 0.5) -> bytes:
        """Discard input until the line has been quiet for quiet_s (at most max_s).

        Used after an error or a stop, so late replies cannot be taken for the
        answer to the next command.
        """
        out = bytearray(self._buf)
        self._buf.clear()
        if self.dead:
            return bytes(out)
        end = time.monotonic() + max_s
        quiet_until = time.monotonic() + quiet_s
        try:
            while time.monotonic() < min(end, quiet_until):
                if self._fill(min(end, quiet_until)):
                    out.extend(self._buf)
                    self._buf.clear()
                    quiet_until = time.monotonic() + quiet_s
        except CommunicationError:
            pass
        if out:
            log.debug("%s: discarded %r", self.name, bytes(out))
        return bytes(out)

    # ----------------------------------------------------------------- errors
    def no_reply(self, what: str, timeout_s: float | None = None) -> CommunicationError:
        t = self.timeout_s if timeout_s is None else timeout_s
        return CommunicationError(
            f"no reply from the {self.name} on {self.port} to {what} within {t:g} s "
            "(check the port, the baud rate and that the controller is powered; "
            "stage.serial.timeout_s sets the wait)"
        )

    def garbled(self, raw: bytes) -> CommunicationError:
        shown = raw[:40]
        return CommunicationError(
            f"garbled reply from the {self.name} on {self.port}: {shown!r} "
            "(usually a wrong stage.serial.baudrate or a noisy cable)"
        )

    def _lost(self, exc: BaseException) -> CommunicationError:
        self.dead = True
        return CommunicationError(
            f"lost the connection to the {self.name} on {self.port} "
            f"(device unplugged or powered off? {exc})"
        )

    def _check_alive(self) -> None:
        if self.dead:
            raise CommunicationError(
                f"the {self.name} on {self.port} is disconnected; reconnect it and start again"
            )

    def close(self) -> None:
        with contextlib.suppress(serial.SerialException, OSError):
            self._ser.close()
        self.dead = True


def port_holders(port: str, proc: Path = Path("/proc")) -> list[int] | None:
    """PIDs of the processes that have `port` open (Linux /proc), or None if unknown."""
    try:
        target = os.path.realpath(port)
        pids: list[int] = []
        for fd_dir in proc.glob("[0-9]*/fd"):
            with contextlib.suppress(OSError):
                if any(os.path.realpath(fd) == target for fd in fd_dir.iterdir()):
                    pids.append(int(fd_dir.parent.name))
        return pids
    except OSError:
        return None


def _stale_pty(port: str) -> CommunicationError:
    return CommunicationError(
        f"cannot open {port}: a stale pseudo-terminal (no controller or emulator serves it any "
        "more; the `hdme-focus emulate` that made it has exited?): start the emulator again "
        "and use the port it prints (or --write-config a new file)"
    )


def _open_error(port: str, name: str, exc: serial.SerialException) -> Exception:
    text = str(exc)
    code = getattr(exc, "errno", None)
    is_pty = port.startswith("/dev/pts/")
    if is_pty and code == errno.EIO:
        return _stale_pty(port)  # the master side is gone
    if is_pty and ("exclusively lock" in text or code == errno.EBUSY) and port_holders(port) == []:
        return _stale_pty(port)  # "busy", yet no process holds it
    if "exclusively lock" in text:
        return PortBusyError(
            f"port busy: {port} is held by another process (another hdme-focus command, "
            f"a serial terminal or the vendor's software); close it and retry"
        )
    if os.name == "nt" and ("Access is denied" in text or code in (errno.EACCES, errno.EPERM)):
        return PortBusyError(f"port busy: {port} is open in another program; close it and retry")
    if code == errno.ENOENT and is_pty:
        return CommunicationError(
            f"cannot open {port}: no such pseudo-terminal (it belonged to an emulator or "
            "program that has exited): start `hdme-focus emulate` again and use its new port"
        )
    if code == errno.ENOENT:
        return CommunicationError(
            f"cannot open {port}: no such port; check stage.serial.port ({LIST_PORTS_HINT})"
        )
    if code in (errno.EACCES, errno.EPERM):
        return CommunicationError(
            f"cannot open {port}: permission denied (on Linux add yourself to the "
            "'dialout' group and log in again)"
        )
    if code == errno.EBUSY:
        return PortBusyError(f"port busy: {port} is in use by another program")
    return CommunicationError(f"cannot open the {name} port {port}: {text}")
