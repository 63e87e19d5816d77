"""SerialLink: a vanished device is one CommunicationError, a stale pty is named as such."""

from __future__ import annotations

import errno
import os
import termios
from pathlib import Path
from typing import Any

import pytest
import serial

from hdme_focus.drivers.base import CommunicationError, PortBusyError
from hdme_focus.drivers.serial.link import SerialLink, port_holders


class VanishingPort:
    """A pyserial stand-in whose tcdrain fails as it does on an unplugged USB adapter."""

    in_waiting = 0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def write(self, data: bytes) -> int:
        return len(data)

    def flush(self) -> None:
        raise termios.error(errno.EIO, "Input/output error")

    def close(self) -> None:
        pass


def test_termios_error_from_tcdrain_is_a_lost_connection() -> None:
    link = SerialLink("/dev/ttyUSB9", serial_factory=VanishingPort, name="GRBL")
    with pytest.raises(CommunicationError, match="lost the connection to the GRBL"):
        link.write(b"?")
    assert link.dead
    with pytest.raises(CommunicationError, match="disconnected"):
        link.write(b"?")


def failing_open(exc: serial.SerialException) -> Any:
    def factory(*args: Any, **kwargs: Any) -> None:
        raise exc

    return factory


def _exc(code: int | None, text: str) -> serial.SerialException:
    exc = serial.SerialException(code, text) if code is not None else serial.SerialException(text)
    return exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (_exc(errno.EIO, "could not open port"), "stale pseudo-terminal"),
        (_exc(errno.ENOENT, "could not open port"), "no such pseudo-terminal"),
        (_exc(None, "Could not exclusively lock port /dev/pts/987"), "stale pseudo-terminal"),
    ],
    ids=["EIO", "ENOENT", "lock-but-nobody-holds-it"],
)
def test_a_stale_pty_is_not_called_port_busy(exc: serial.SerialException, expected: str) -> None:
    with pytest.raises(CommunicationError, match=expected) as info:
        SerialLink("/dev/pts/987", serial_factory=failing_open(exc))
    assert not isinstance(info.value, PortBusyError)
    assert "hdme-focus emulate" in str(info.value)


def test_a_pty_someone_holds_is_port_busy() -> None:
    master, slave = os.openpty()
    try:
        port = os.ttyname(slave)
        assert port_holders(port) == [os.getpid()]
        exc = _exc(None, f"Could not exclusively lock port {port}")
        with pytest.raises(PortBusyError, match="port busy"):
            SerialLink(port, serial_factory=failing_open(exc))
    finally:
        os.close(master)
        os.close(slave)


def test_holders_of_a_missing_port_are_none_found(tmp_path: Path) -> None:
    assert port_holders(str(tmp_path / "ttyNONE")) == []
