"""Zaber ASCII driver against the emulator over a real pty."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from hdme_focus.config import ConfigError, ZaberStageConfig
from hdme_focus.drivers.base import (
    CommunicationError,
    NotHomedError,
    PortBusyError,
    SafeStage,
    StageFault,
    StageTimeout,
)
from hdme_focus.drivers.serial.emulators import EmulatedAxis, ZaberEmulator
from hdme_focus.drivers.serial.link import SerialLink
from hdme_focus.drivers.serial.zaber import ZaberRejected, ZaberStage, open_zaber_stage

REPLY_S = 0.3
STEPS_PER_MM = 10000.0


def connect(emu: ZaberEmulator, **overrides: Any) -> ZaberStage:
    fields: dict[str, Any] = {
        "driver": "zaber",
        "axis": "1",
        "steps_per_mm": STEPS_PER_MM,
        "serial": {"port": emu.port, "timeout_s": REPLY_S},
        "move_timeout_s": 2.0,
    }
    return open_zaber_stage(ZaberStageConfig(**(fields | overrides)))


def make_emulator(speed_mm_s: float = 50.0, homed: bool = True) -> ZaberEmulator:
    axis = EmulatedAxis(position_mm=1.0, speed_mm_s=speed_mm_s, homed=homed)
    return ZaberEmulator(axis, steps_per_mm=STEPS_PER_MM)


@pytest.fixture
def emu() -> Iterator[ZaberEmulator]:
    with make_emulator() as e:
        yield e


def test_move_polls_until_idle_and_reports_position(emu: ZaberEmulator) -> None:
    emu.axis.speed_mm_s = 10.0
    stage = connect(emu)
    t0 = time.monotonic()
    stage.move_to(2.0)
    assert stage.is_moving()
    stage.wait(2.0)
    assert time.monotonic() - t0 >= 0.09
    assert not emu.moving
    assert stage.position_mm() == pytest.approx(2.0, abs=1e-4)
    assert "/1 1 move abs 20000\n" in emu.received_text()
    stage.close()


def test_unhomed_axis_is_refused_until_homed() -> None:
    with make_emulator(homed=False) as emu:
        stage = connect(emu)
        assert not stage.is_homed()
        with pytest.raises(NotHomedError, match=r"\(WR\).*stage home"):
            SafeStage(stage, 0.0, 3.0, 1.0).move_to(1.5)
        assert "move" not in emu.received_text()
        stage.home()
        assert stage.is_homed()
        assert SafeStage(stage, 0.0, 3.0, 1.0).move_to(0.5) == pytest.approx(0.5, abs=1e-4)
        stage.close()


def test_allow_unhomed_moves_without_reference() -> None:
    with make_emulator(homed=False) as emu:
        stage = connect(emu, allow_unhomed=True)
        assert SafeStage(stage, 0.0, 3.0, 1.0).move_to(1.5) == pytest.approx(1.5, abs=1e-4)
        stage.close()


def test_stop_halts_a_move(emu: ZaberEmulator) -> None:
    emu.axis.speed_mm_s = 2.0
    stage = connect(emu)
    stage.move_to(3.0)
    time.sleep(0.15)
    stage.stop()
    assert not emu.moving
    assert 1.05 < stage.position_mm() < 2.0
    stage.close()


def test_wait_times_out_and_stops_the_axis(emu: ZaberEmulator) -> None:
    emu.axis.speed_mm_s = 1.0
    stage = connect(emu)
    stage.move_to(3.0)
    with pytest.raises(StageTimeout, match=r"within 0.2 s"):
        stage.wait(0.2)
    assert not emu.moving
    stage.close()


class ManualClock:
    """Time that passes only when the driver sleeps; `at` runs a callback at a set time."""

    def __init__(self) -> None:
        self.now_s = 0.0
        self.events: list[tuple[float, Callable[[], None]]] = []

    def monotonic(self) -> float:
        return self.now_s

    def sleep(self, seconds: float) -> None:
        self.now_s += max(seconds, 0.0)
        due = [e for e in self.events if e[0] <= self.now_s]
        self.events = [e for e in self.events if e[0] > self.now_s]
        for _, event in due:
            event()

    def at(self, time_s: float, event: Callable[[], None]) -> None:
        self.events.append((time_s, event))


def test_interrupted_move_is_an_error() -> None:
    """The knob turns 50 ms into a 400 ms move, in the clock the axis and driver share.

    Time is the test's, not the machine's: under any load the move cannot
    finish before the interruption (the flaky version raced a thread timer).
    """
    clock = ManualClock()
    axis = EmulatedAxis(position_mm=1.0, speed_mm_s=2.0, homed=True, clock=clock.monotonic)
    with ZaberEmulator(axis, steps_per_mm=STEPS_PER_MM) as emu:
        link = SerialLink(emu.port, timeout_s=REPLY_S, name="Zaber")
        stage = ZaberStage(link, steps_per_mm=STEPS_PER_MM, clock=clock)
        stage.move_to(1.8)

        def knob() -> None:  # someone turns the knob: the move ends early with NI
            with emu.lock:
                emu.axis.stop()
                emu.flags.add("NI")

        clock.at(0.05, knob)
        with pytest.raises(StageFault, match="interrupted"):
            stage.wait(2.0)
        assert 1.0 < emu.axis.position_mm < 1.8
        assert clock.monotonic() < 0.4  # it ended at the knob, not at the target
        stage.close()


def test_a_move_that_outlasts_its_timeout_is_stopped_in_injected_time() -> None:
    clock = ManualClock()
    axis = EmulatedAxis(position_mm=1.0, speed_mm_s=1.0, homed=True, clock=clock.monotonic)
    with ZaberEmulator(axis, steps_per_mm=STEPS_PER_MM) as emu:
        link = SerialLink(emu.port, timeout_s=REPLY_S, name="Zaber")
        stage = ZaberStage(link, steps_per_mm=STEPS_PER_MM, clock=clock)
        stage.move_to(2.0)  # needs 1 s of the test's time
        with pytest.raises(StageTimeout, match=r"stage\.move_timeout_s"):
            stage.wait(0.5)
        assert not emu.moving and emu.axis.position_mm == pytest.approx(1.5, abs=0.05)
        stage.close()


def test_rejection_names_its_reason(emu: ZaberEmulator) -> None:
    stage = connect(emu)
    emu.faults.error_on = "move"
    emu.faults.error_reply = "BADDATA"
    with pytest.raises(ZaberRejected, match=r"BADDATA .*out of range"):
        SafeStage(stage, 0.0, 3.0, 1.0).move_to(1.5)
    assert not emu.moving
    assert SafeStage(stage, 0.0, 3.0, 1.0).move_to(1.5) == pytest.approx(1.5, abs=1e-4)
    stage.close()


def test_second_opener_gets_port_busy(emu: ZaberEmulator) -> None:
    stage = connect(emu)
    with pytest.raises(PortBusyError, match="port busy"):
        SerialLink(emu.port)
    stage.close()


def test_config_mistakes_are_one_line(emu: ZaberEmulator) -> None:
    with pytest.raises(ConfigError, match="steps_per_mm must be set"):
        connect(emu, steps_per_mm=0.0)
    with pytest.raises(ConfigError, match="Zaber axis is a number"):
        connect(emu, axis="Z")
    with pytest.raises(CommunicationError, match=r"stage.device_address"):
        connect(emu, device_address=7)  # nobody answers as device 7
