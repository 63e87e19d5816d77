"""Thorlabs APT driver against the emulated KDC101 over a real pty."""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hdme_focus.config import AptStageConfig, ConfigError
from hdme_focus.drivers.base import (
    CommunicationError,
    NotHomedError,
    PortBusyError,
    SafeStage,
    StageTimeout,
)
from hdme_focus.drivers.serial import apt_protocol as apt
from hdme_focus.drivers.serial.apt import AptError, AptStage, open_apt_stage
from hdme_focus.drivers.serial.emulators import AptEmulator, EmulatedAxis
from hdme_focus.drivers.serial.link import SerialLink

REPLY_S = 0.3
Z8 = 34304


def connect(emu: AptEmulator, **overrides: Any) -> AptStage:
    fields: dict[str, Any] = {
        "driver": "apt",
        "axis": "1",
        "serial": {"port": emu.port, "timeout_s": REPLY_S},
        "move_timeout_s": 2.0,
    }
    return open_apt_stage(AptStageConfig(**(fields | overrides)))


def make_emulator(speed_mm_s: float = 50.0, homed: bool = True) -> AptEmulator:
    axis = EmulatedAxis(position_mm=1.0, speed_mm_s=speed_mm_s, homed=homed, min_mm=0, max_mm=25)
    return AptEmulator(axis)


@pytest.fixture
def emu() -> Iterator[AptEmulator]:
    with make_emulator() as e:
        yield e


def sent_messages(emu: AptEmulator) -> list[tuple[int, bytes]]:
    """Parse what the host sent into (message id, data) pairs."""
    raw = bytes(emu.received)
    out = []
    while len(raw) >= 6:
        msg_id = struct.unpack_from("<H", raw)[0]
        if raw[4] & apt.HAS_DATA:
            n = struct.unpack_from("<H", raw, 2)[0]
            out.append((msg_id, raw[6 : 6 + n]))
            raw = raw[6 + n :]
        else:
            out.append((msg_id, raw[2:4]))
            raw = raw[6:]
    return out


def test_move_absolute_is_framed_per_the_protocol(emu: AptEmulator) -> None:
    emu.axis.speed_mm_s = 10.0
    stage = connect(emu)
    t0 = time.monotonic()
    stage.move_to(2.0)
    stage.wait(2.0)
    assert time.monotonic() - t0 >= 0.09
    assert not emu.moving
    assert stage.position_mm() == pytest.approx(2.0, abs=1 / Z8)
    header = b"\x53\x04\x06\x00\xd0\x01"  # id 0x0453, 6 data bytes, dest 0x50|0x80, source 1
    assert header in bytes(emu.received)
    data = next(d for m, d in sent_messages(emu) if m == apt.MOT_MOVE_ABSOLUTE)
    assert struct.unpack("<Hi", data) == (1, 2 * Z8)
    stage.close()


def test_unhomed_axis_is_refused_until_homed() -> None:
    with make_emulator(homed=False) as emu:
        stage = connect(emu)
        assert not stage.is_homed()
        with pytest.raises(NotHomedError, match="stage home"):
            SafeStage(stage, 0.0, 3.0, 1.0).move_to(1.5)
        assert apt.MOT_MOVE_ABSOLUTE not in [m for m, _ in sent_messages(emu)]
        stage.home()
        assert stage.is_homed()
        assert SafeStage(stage, 0.0, 3.0, 1.0).move_to(0.5) == pytest.approx(0.5, abs=1e-4)
        stage.close()


def test_stop_halts_a_move(emu: AptEmulator) -> None:
    emu.axis.speed_mm_s = 2.0
    stage = connect(emu)
    stage.move_to(3.0)
    time.sleep(0.15)
    assert stage.is_moving()
    stage.stop()
    assert not emu.moving
    assert 1.05 < stage.position_mm() < 2.0
    stop = [d for m, d in sent_messages(emu) if m == apt.MOT_MOVE_STOP]
    assert stop == [bytes([1, apt.STOP_PROFILED])]
    stage.close()


def test_wait_times_out_and_stops_the_axis(emu: AptEmulator) -> None:
    emu.axis.speed_mm_s = 1.0
    stage = connect(emu)
    stage.move_to(3.0)
    with pytest.raises(StageTimeout, match=r"within 0\.2 s"):
        stage.wait(0.2)
    assert not emu.moving
    stage.close()


def test_rich_response_error_is_reported_with_its_notes(emu: AptEmulator) -> None:
    stage = connect(emu)
    emu.faults.error_on = "MOT_MOVE_ABSOLUTE"
    emu.faults.error_reply = "position outside travel"
    with pytest.raises(AptError, match="about MOT_MOVE_ABSOLUTE: position outside travel"):
        SafeStage(stage, 0.0, 3.0, 1.0).move_to(1.5)
    assert not emu.moving
    assert SafeStage(stage, 0.0, 3.0, 1.0).move_to(1.5) == pytest.approx(1.5, abs=1e-4)
    stage.close()


def test_second_opener_gets_port_busy(emu: AptEmulator) -> None:
    stage = connect(emu)
    with pytest.raises(PortBusyError, match="port busy"):
        SerialLink(emu.port)
    stage.close()


def test_config_mistakes_are_one_line(emu: AptEmulator) -> None:
    with pytest.raises(ConfigError, match="APT channel is a number"):
        connect(emu, axis="Z")
    emu.faults.no_reply = True
    with pytest.raises(CommunicationError, match="APT controller"):
        connect(emu)
