"""G-code stage drivers (GRBL and Marlin) against the emulator over a real pty."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from hdme_focus.config import ConfigError, GcodeStageConfig
from hdme_focus.drivers.base import (
    CommunicationError,
    NotHomedError,
    PortBusyError,
    SafeStage,
    StageFault,
    StageTimeout,
)
from hdme_focus.drivers.serial.emulators import EmulatedAxis, GcodeEmulator
from hdme_focus.drivers.serial.gcode import GcodeStage, GrblError, open_gcode_stage
from hdme_focus.drivers.serial.link import SerialLink

REPLY_S = 0.3
FEED = 3000.0  # mm/min = 50 mm/s: moves in tests take tens of ms


@pytest.fixture(params=["grbl", "marlin"])
def dialect(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def make_emulator(dialect: str, speed_mm_s: float = 50.0, homed: bool = True) -> GcodeEmulator:
    return GcodeEmulator(dialect, EmulatedAxis(position_mm=1.0, speed_mm_s=speed_mm_s, homed=homed))


def connect(emu: GcodeEmulator, **overrides: Any) -> GcodeStage:
    fields: dict[str, Any] = {
        "driver": "gcode",
        "dialect": emu.dialect,
        "serial": {"port": emu.port, "timeout_s": REPLY_S},
        "feed_mm_min": FEED,
        "move_timeout_s": 2.0,
    }
    cfg = GcodeStageConfig(**(fields | overrides))
    stage = open_gcode_stage(cfg)
    if emu.dialect == "marlin" and emu.axis.homed:
        stage._homed = True  # Marlin cannot be asked; the emulator was homed before we came
    return stage


@pytest.fixture
def emu(dialect: str) -> Iterator[GcodeEmulator]:
    with make_emulator(dialect) as e:
        yield e


def test_move_waits_for_completion_and_reports_position(emu: GcodeEmulator) -> None:
    emu.axis.speed_mm_s = 10.0
    stage = connect(emu, feed_mm_min=600.0)  # 10 mm/s
    t0 = time.monotonic()
    stage.move_to(2.0)
    stage.wait(2.0)
    assert time.monotonic() - t0 >= 0.09  # 1 mm at 10 mm/s: the wait really waited
    assert not emu.moving
    assert stage.position_mm() == pytest.approx(2.0, abs=1e-3)
    wire = emu.received_text()
    assert "G1 Z2.0000 F600" in wire
    assert ("G4 P0" if emu.dialect == "grbl" else "M400") in wire
    stage.close()


def test_unhomed_axis_is_refused_until_homed(dialect: str) -> None:
    with make_emulator(dialect, homed=False) as emu:
        stage = connect(emu)
        assert not stage.is_homed()
        with pytest.raises(NotHomedError, match="stage home"):
            SafeStage(stage, 0.0, 3.0, 1.0).move_to(1.5)
        assert "G1" not in emu.received_text()
        stage.home()
        assert stage.is_homed() and emu.axis.homed
        # GRBL ends homing pulled off the switch: machine position -$27 (1 mm)
        homed_mm = -1.0 if dialect == "grbl" else 0.0
        assert stage.position_mm() == pytest.approx(homed_mm, abs=1e-3)
        assert SafeStage(stage, -2.0, 3.0, 1.0).move_to(0.0) == pytest.approx(0.0, abs=1e-3)
        stage.close()


def test_allow_unhomed_unlocks_grbl_with_dollar_x() -> None:
    with make_emulator("grbl", homed=False) as emu:
        stage = connect(emu, allow_unhomed=True)
        SafeStage(stage, 0.0, 3.0, 1.0).move_to(1.5)
        assert "$X" in emu.received_text()
        assert emu.axis.position_mm == pytest.approx(1.5)
        stage.close()


def test_stop_halts_a_move_and_the_stage_moves_again(emu: GcodeEmulator) -> None:
    emu.axis.speed_mm_s = 2.0
    stage = connect(emu, feed_mm_min=120.0)
    stage.move_to(3.0)
    time.sleep(0.15)
    stage.stop()
    assert not emu.moving
    stopped = stage.position_mm()
    assert 1.05 < stopped < 2.0
    emu.axis.speed_mm_s = 50.0
    stage.feed_mm_min = FEED
    stage.move_to(1.0)
    stage.wait(2.0)
    assert stage.position_mm() == pytest.approx(1.0, abs=1e-3)
    stage.close()


def test_wait_times_out_and_stops_the_axis(emu: GcodeEmulator) -> None:
    emu.axis.speed_mm_s = 1.0
    stage = connect(emu, feed_mm_min=60.0)
    stage.move_to(3.0)
    t0 = time.monotonic()
    with pytest.raises(StageTimeout, match=r"did not complete within 0.2 s"):
        stage.wait(0.2)
    assert time.monotonic() - t0 < 1.5
    assert not emu.moving
    stage.close()


def _arm_later(emu: GcodeEmulator, name: str, value: object, after_s: float = 0.05) -> None:
    timer = threading.Timer(after_s, setattr, (emu.faults, name, value))
    timer.daemon = True
    timer.start()


# (fault, value, mid-move?, expected error per dialect, message fragment per dialect)
def test_error_reply_names_the_code_meaning(emu: GcodeEmulator) -> None:
    stage = connect(emu)
    emu.faults.error_on = "G1" if emu.dialect == "marlin" else "G21 G90 G1"
    emu.faults.error_reply = 22 if emu.dialect == "grbl" else "checksum mismatch, Last Line: 0"
    with pytest.raises(StageFault) as info:
        SafeStage(stage, 0.0, 3.0, 1.0).move_to(1.5)
    if emu.dialect == "grbl":
        assert isinstance(info.value, GrblError) and info.value.code == 22
        assert "feed rate has not yet been set" in str(info.value)
    else:
        assert "checksum mismatch" in str(info.value)
    assert not emu.moving
    # the link is in step again: the next move works
    assert SafeStage(stage, 0.0, 3.0, 1.0).move_to(1.5) == pytest.approx(1.5, abs=1e-3)
    stage.close()


def test_late_reply_within_the_timeout_is_fine(emu: GcodeEmulator) -> None:
    stage = connect(emu)
    emu.faults.reply_delay_s = 0.1
    assert SafeStage(stage, 0.0, 3.0, 1.0).move_to(1.5) == pytest.approx(1.5, abs=1e-3)
    stage.close()


def test_second_opener_gets_port_busy(emu: GcodeEmulator) -> None:
    stage = connect(emu)
    with pytest.raises(PortBusyError, match="port busy"):
        SerialLink(emu.port, timeout_s=REPLY_S)
    stage.close()
    SerialLink(emu.port, timeout_s=REPLY_S).close()  # free again once closed


def test_port_problems_are_one_clear_line(tmp_path: Any) -> None:
    with pytest.raises(ConfigError, match=r"stage.serial.port is not set"):
        open_gcode_stage(GcodeStageConfig())
    with pytest.raises(CommunicationError, match="no such port"):
        SerialLink(str(tmp_path / "ttyNOPE"))


def test_wrong_dialect_is_reported(dialect: str) -> None:
    other = "marlin" if dialect == "grbl" else "grbl"
    with make_emulator(other) as emu:
        cfg = GcodeStageConfig(dialect=dialect, serial={"port": emu.port, "timeout_s": REPLY_S})
        with pytest.raises(CommunicationError, match=r"stage.dialect"):
            open_gcode_stage(cfg)
