"""One stage suite over every driver: sim, replay and the four emulated controllers.

The same scenarios run on each bench: guarded moves land, refusals send
nothing, long moves split; a signal (InterruptedBySignal, as the SIGTERM/SIGHUP
handler raises it) or Ctrl-C at seeded random points of a travel stops the
stage. On the emulators, device faults are injected (no reply, garbled reply,
alarm mid-move, port vanishing, limit switch mid-move, controller in inches,
reset lost, reply split across reads). After every scenario: the axis is not
moving, and no commanded position, neither at the driver API nor on the wire,
lies outside the soft limits.
"""

from __future__ import annotations

import random
import re
import struct
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from hdme_focus.config import (
    AptStageConfig,
    GcodeStageConfig,
    SimStageConfig,
    ZaberStageConfig,
)
from hdme_focus.core.errors import InterruptedBySignal
from hdme_focus.drivers.base import (
    CommunicationError,
    DeviceError,
    HomingStage,
    MotionRefused,
    RealClock,
    SafeStage,
    Stage,
    StageFault,
)
from hdme_focus.drivers.serial import apt_protocol as apt
from hdme_focus.drivers.serial.apt import AptStage, open_apt_stage
from hdme_focus.drivers.serial.emulators import (
    AptEmulator,
    EmulatedAxis,
    GcodeEmulator,
    PtyEmulator,
    ZaberEmulator,
)
from hdme_focus.drivers.serial.gcode import GrblAlarm, GrblStage, open_gcode_stage
from hdme_focus.drivers.serial.link import SerialLink
from hdme_focus.drivers.serial.zaber import ZaberStage, open_zaber_stage
from hdme_focus.drivers.sim import SimClock, SimStage
from hdme_focus.drivers.sim.replay import ReplayStage, recording_from_files

LIMITS_MM = (0.0, 3.0)
MAX_STEP_MM = 1.0
REPLY_S = 0.6  # generous: a starved emulator thread on a loaded CI core is not a fault
SPEED_MM_S = 10.0  # a 1 mm step takes 100 ms
FAULT_SPEED_MM_S = 2.0  # 500 ms: a fault armed 30 ms in lands mid-move even under load
ZABER_STEPS = 10000.0
APT_COUNTS = 34304.0
BENCHES = ["sim", "replay", "grbl", "marlin", "zaber", "apt"]
SERIAL = ["grbl", "marlin", "zaber", "apt"]


class Spy:
    """Sits between SafeStage and the driver: records targets and stops, raises on cue.

    `interrupt_at = n` raises `interrupt` from the n-th driver call, as a
    signal handler raising in the main thread would.
    """

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.targets: list[float] = []
        self.stops = 0
        self.calls = 0
        self.interrupt_at: int | None = None
        self.interrupt: BaseException = InterruptedBySignal(15, "SIGTERM")
        self.after_move: Callable[[], None] | None = None  # runs once the command is out
        self.fired_in = ""  # the driver call the interrupt came from

    def _tick(self, where: str) -> None:
        self.calls += 1
        if self.interrupt_at is not None and self.calls == self.interrupt_at:
            self.interrupt_at = None
            self.fired_in = where
            raise self.interrupt

    def position_mm(self) -> float:
        self._tick("position_mm")
        return self.stage.position_mm()

    def move_to(self, target_mm: float) -> None:
        self.targets.append(target_mm)
        self.stage.move_to(target_mm)
        if self.after_move is not None:
            self.after_move()
        self._tick("move_to")  # after the command went out: the axis is moving

    def is_moving(self) -> bool:
        return self.stage.is_moving()

    def wait(self, timeout_s: float) -> None:
        self._tick("wait")
        self.stage.wait(timeout_s)

    def stop(self) -> None:
        self.stops += 1
        self.stage.stop()

    def close(self) -> None:
        self.stage.close()


@dataclass
class Bench:
    name: str
    safe: SafeStage
    spy: Spy
    emulator: PtyEmulator | None = None
    closers: list[Callable[[], None]] = field(default_factory=list)

    def moving(self) -> bool:
        """Is the axis itself moving (the emulator's truth, not the driver's belief)?"""
        if self.emulator is not None:
            return self.emulator.moving
        return self.spy.stage.is_moving()

    def wire_targets_mm(self) -> list[float]:
        """Every absolute target the controller received, in mm."""
        emu = self.emulator
        if emu is None:
            return list(self.spy.targets)
        if isinstance(emu, GcodeEmulator):
            return [float(v) for v in re.findall(r"G1 Z(-?[\d.]+)", emu.received_text())]
        if isinstance(emu, ZaberEmulator):
            text = emu.received_text()
            return [int(v) / ZABER_STEPS for v in re.findall(r"move abs (-?\d+)", text)]
        raw = bytes(emu.received)
        head = struct.pack("<HH", apt.MOT_MOVE_ABSOLUTE, 6)
        out = []
        for m in re.finditer(re.escape(head), raw):
            _chan, counts = struct.unpack_from("<Hi", raw, m.start() + 6)
            out.append(counts / APT_COUNTS)
        return out

    def close(self) -> None:
        for close in self.closers:
            close()

    def check_invariants(self) -> None:
        lo, hi = LIMITS_MM
        assert not self.moving(), f"{self.name}: the axis is still moving"
        for t in [*self.spy.targets, *self.wire_targets_mm()]:
            assert lo - 1e-6 <= t <= hi + 1e-6, f"{self.name}: commanded {t} mm past the limits"


def _emulator(name: str, speed_mm_s: float) -> PtyEmulator:
    axis = EmulatedAxis(position_mm=1.0, speed_mm_s=speed_mm_s, homed=True)
    if name in ("grbl", "marlin"):
        return GcodeEmulator(name, axis).start()
    if name == "zaber":
        return ZaberEmulator(axis, steps_per_mm=ZABER_STEPS).start()
    return AptEmulator(axis, counts_per_mm=APT_COUNTS).start()


def _serial_stage(name: str, port: str, speed_mm_s: float) -> Stage:
    common: dict[str, Any] = {"serial": {"port": port, "timeout_s": REPLY_S}}
    if name in ("grbl", "marlin"):
        cfg = GcodeStageConfig(dialect=name, feed_mm_min=speed_mm_s * 60, **common)
        stage: Any = open_gcode_stage(cfg)
        if name == "marlin":
            stage._homed = True  # Marlin cannot be asked; the emulator was homed before
        return stage  # type: ignore[no-any-return]
    if name == "zaber":
        return open_zaber_stage(ZaberStageConfig(steps_per_mm=ZABER_STEPS, **common))
    return open_apt_stage(AptStageConfig(steps_per_mm=APT_COUNTS, **common))


def make_bench(name: str, tmp_path: Path, speed_mm_s: float = SPEED_MM_S) -> Bench:
    emulator = None
    clock = SimClock()
    if name == "sim":
        raw: Stage = SimStage(SimStageConfig(start_mm=1.0, speed_mm_s=SPEED_MM_S), clock)
    elif name == "replay":
        positions = [round(0.1 * i, 3) for i in range(31)]
        files = []
        for i in range(len(positions)):
            files.append(tmp_path / f"{i:03d}.png")
            files[-1].write_bytes(b"")
        raw = ReplayStage(recording_from_files(files, positions), clock, SPEED_MM_S, 1.0)
    else:
        emulator = _emulator(name, speed_mm_s)
        raw = _serial_stage(name, emulator.port, speed_mm_s)
    spy = Spy(raw)
    # 2.5 s: a late (1.2 s) M400 ok of a 0.5 s move comes well inside it
    safe = SafeStage(spy, *LIMITS_MM, MAX_STEP_MM, move_timeout_s=2.5, clock=clock)
    bench = Bench(name, safe, spy, emulator)
    bench.closers.append(spy.close)
    if emulator is not None:
        bench.closers.append(emulator.close)
    return bench


@pytest.fixture(params=BENCHES)
def bench(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Bench]:
    b = make_bench(str(request.param), tmp_path)
    yield b
    b.close()


# ----------------------------------------------------------------- shared scenarios


def test_a_guarded_move_lands_and_reports_its_position(bench: Bench) -> None:
    assert bench.safe.move_to(1.7) == pytest.approx(1.7, abs=1e-3)
    assert bench.safe.position_mm() == pytest.approx(1.7, abs=1e-3)
    bench.check_invariants()


@pytest.mark.parametrize("target_mm", [-0.5, 3.2, float("nan")])
def test_refused_targets_send_nothing(bench: Bench, target_mm: float) -> None:
    with pytest.raises(MotionRefused):
        bench.safe.move_to(target_mm)
    with pytest.raises(MotionRefused):
        bench.safe.travel_to(target_mm)
    assert bench.spy.targets == [] and bench.wire_targets_mm() == []
    assert bench.safe.position_mm() == pytest.approx(1.0, abs=1e-3)
    bench.check_invariants()


def test_an_oversize_step_is_refused_and_travel_splits_it(bench: Bench) -> None:
    with pytest.raises(MotionRefused, match="max_step_mm"):
        bench.safe.move_to(2.5)
    assert bench.wire_targets_mm() == []
    assert bench.safe.travel_to(2.5) == pytest.approx(2.5, abs=1e-3)
    assert bench.spy.targets == pytest.approx([2.0, 2.5])
    bench.check_invariants()


SIGNAL_POINTS = random.Random(20261201).sample(range(1, 9), 4)


@pytest.mark.parametrize("call", SIGNAL_POINTS)
@pytest.mark.parametrize(
    "interrupt",
    [InterruptedBySignal(15, "SIGTERM"), InterruptedBySignal(1, "SIGHUP"), KeyboardInterrupt()],
    ids=["SIGTERM", "SIGHUP", "SIGINT"],
)
def test_a_signal_at_any_point_of_a_travel_stops_the_stage(
    bench: Bench, call: int, interrupt: BaseException
) -> None:
    bench.spy.interrupt = interrupt
    bench.spy.interrupt_at = call
    with pytest.raises(type(interrupt)):
        bench.safe.travel_to(0.2)  # two guarded steps: 1.0 -> 0.2 in 1 mm steps
        bench.safe.travel_to(2.9)
    if bench.spy.fired_in in ("move_to", "wait"):  # mid-move: the guard must have stopped it
        assert bench.spy.stops == 1 and bench.safe.stops == 1
    else:  # between moves (reading the position): nothing was moving, nothing to stop
        assert bench.spy.fired_in == "position_mm" and bench.spy.stops == 0
    bench.check_invariants()


# ----------------------------------------------------------------- device faults


@dataclass(frozen=True)
class Fault:
    name: str
    arm: Callable[[PtyEmulator], None]
    expect: type[BaseException] | None  # None: the move must still succeed
    match: str = ""  # what the error message must say
    benches: tuple[str, ...] = tuple(SERIAL)
    mid_move: bool = False  # armed once the move command is out, not before


def _set(**faults: Any) -> Callable[[PtyEmulator], None]:
    def arm(emu: PtyEmulator) -> None:
        for key, value in faults.items():
            setattr(emu.faults, key, value)

    return arm


def _inches(emu: PtyEmulator) -> None:
    assert isinstance(emu, GcodeEmulator)
    emu.inches = True


def _reset_lost(emu: PtyEmulator) -> None:
    emu.faults.lost_resets = 1
    emu.faults.alarm_after_s = 0.03


FAULTS = [
    # Marlin has no real-time status query: it notices silence only at move_timeout_s
    Fault("no reply", _set(no_reply=True), DeviceError, "no reply|did not complete", mid_move=True),
    Fault(
        "late reply",
        _set(reply_delay_s=1.2),
        DeviceError,
        "no reply|did not complete",
        mid_move=True,
    ),
    Fault("garbled reply", _set(garble=True), CommunicationError, "garbled", mid_move=True),
    Fault(
        "alarm mid-move", _set(alarm_after_s=0.03), StageFault, "ALARM:1|endstop|FS|motion error"
    ),
    Fault(
        "port vanishing", _set(disconnect_after_s=0.03), CommunicationError, "lost the connection"
    ),
    Fault("limit switch mid-move", _set(limit_after_s=0.03), StageFault, "limit|endstop|WL"),
    Fault("reply split across reads", _set(split_replies=True), None),
    Fault("controller in inches", _inches, None, benches=("grbl",)),
    Fault("reset lost", _reset_lost, GrblAlarm, "ALARM:1", benches=("grbl",)),
]
FAULT_CASES = [
    pytest.param(f, b, id=f"{b}-{f.name.replace(' ', '-')}") for f in FAULTS for b in f.benches
]


@pytest.mark.slow  # silent controllers are noticed only after their reply timeout
@pytest.mark.parametrize(("fault", "name"), FAULT_CASES)
def test_device_faults_stop_the_stage_and_stay_inside_the_limits(
    fault: Fault, name: str, tmp_path: Path
) -> None:
    b = make_bench(name, tmp_path, FAULT_SPEED_MM_S)
    try:
        emu = b.emulator
        assert emu is not None

        def arm() -> None:
            with emu.lock:
                fault.arm(emu)

        if fault.mid_move:
            b.spy.after_move = arm
        else:
            arm()
        if fault.expect is None:
            assert b.safe.move_to(2.0) == pytest.approx(2.0, abs=1e-3)
            assert emu.axis.position_mm == pytest.approx(2.0, abs=1e-3)
        else:
            with pytest.raises(fault.expect, match=fault.match):
                b.safe.move_to(2.0)
            # the guard stopped it; only Marlin's late M114, read after M400 waited out the
            # late ok of a completed move, fails outside a move, with nothing to stop
            assert b.safe.stops == (0 if (name, fault.name) == ("marlin", "late reply") else 1)
        if isinstance(b.emulator, GcodeEmulator) and fault.name == "reset lost":
            assert b.emulator.resets >= 2 and not b.emulator.critical  # resent, unlocked
        if fault.mid_move:  # the controller stays silent or garbled: the stop cannot be
            with emu.lock:  # confirmed over the wire, so ask the emulator after clearing it
                emu.faults.no_reply = emu.faults.garble = False
        b.check_invariants()
    finally:
        b.close()


# ----------------------------------------------------------------- homing interrupted


class SignalClock:
    """A real clock that raises a signal's exception on its n-th reading, mid-loop."""

    def __init__(self, after_calls: int, interrupt: BaseException) -> None:
        self.calls = 0
        self.after_calls = after_calls
        self.interrupt = interrupt
        self.real = RealClock()

    def monotonic(self) -> float:
        self.calls += 1
        if self.calls == self.after_calls:
            raise self.interrupt
        return self.real.monotonic()

    def sleep(self, seconds: float) -> None:
        self.real.sleep(seconds)


def _homing_stage(name: str, emu: PtyEmulator, clock: SignalClock) -> HomingStage:
    link = SerialLink(emu.port, timeout_s=REPLY_S, name=name)
    if name == "grbl":
        return GrblStage(link, clock=clock)
    if name == "zaber":
        return ZaberStage(link, steps_per_mm=ZABER_STEPS, clock=clock)
    return AptStage(link, counts_per_mm=APT_COUNTS, clock=clock)


@pytest.mark.parametrize("name", ["grbl", "zaber", "apt"])
@pytest.mark.parametrize(
    "interrupt",
    [InterruptedBySignal(15, "SIGTERM"), InterruptedBySignal(1, "SIGHUP"), KeyboardInterrupt()],
    ids=["SIGTERM", "SIGHUP", "SIGINT"],
)
def test_a_signal_during_homing_stops_the_axis(name: str, interrupt: BaseException) -> None:
    axis = EmulatedAxis(position_mm=2.0, speed_mm_s=FAULT_SPEED_MM_S, homed=False)
    emu = (
        GcodeEmulator("grbl", axis)
        if name == "grbl"
        else ZaberEmulator(axis, steps_per_mm=ZABER_STEPS)
        if name == "zaber"
        else AptEmulator(axis, counts_per_mm=APT_COUNTS)
    )
    with emu:
        clock = SignalClock(after_calls=5, interrupt=interrupt)  # a few polls into the cycle
        stage = _homing_stage(name, emu, clock)
        safe = SafeStage(stage, *LIMITS_MM, MAX_STEP_MM, clock=clock)
        with pytest.raises(type(interrupt)):
            safe.home()
        assert emu.axis.position_mm < 2.0  # the cycle had started: the axis left 2.0 mm
        assert safe.stops == 1 and not emu.moving and not emu.axis.homed
        stage.close()
