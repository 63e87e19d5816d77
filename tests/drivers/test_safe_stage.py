"""SafeStage over the simulated stage: refusals move nothing; faults and Ctrl-C stop the stage."""

from __future__ import annotations

import math

import pytest

from hdme_focus.config import SimStageConfig
from hdme_focus.core.errors import InterruptedBySignal
from hdme_focus.drivers.base import MotionRefused, SafeStage, StageFault, StageTimeout
from hdme_focus.drivers.sim import SimClock, SimStage


def bench(
    start_mm: float = 1.0, speed_mm_s: float = 2.0, timeout_s: float = 30.0, settle_s: float = 0.0
) -> tuple[SafeStage, SimStage, SimClock]:
    clock = SimClock()
    stage = SimStage(SimStageConfig(start_mm=start_mm, speed_mm_s=speed_mm_s), clock)
    safe = SafeStage(stage, 0.0, 3.0, 1.0, move_timeout_s=timeout_s, settle_s=settle_s, clock=clock)
    return safe, stage, clock


@pytest.mark.parametrize("target", [-0.01, 3.01, 100.0, math.nan, math.inf])
def test_out_of_limit_targets_are_refused_and_nothing_moves(target: float) -> None:
    safe, stage, clock = bench(start_mm=2.5)
    with pytest.raises(MotionRefused):
        safe.move_to(target)
    with pytest.raises(MotionRefused):
        safe.travel_to(target)
    assert stage.history == [] and stage.moves == 0
    assert stage.position_mm() == 2.5 and clock.monotonic() == 0.0


def test_oversize_step_is_refused_and_nothing_moves() -> None:
    safe, stage, _ = bench(start_mm=0.5)
    with pytest.raises(MotionRefused, match="max_step_mm"):
        safe.move_to(1.6)  # inside the limits, but a 1.1 mm step
    assert stage.history == [] and stage.position_mm() == 0.5
    assert safe.move_to(1.5) == pytest.approx(1.5)  # exactly max_step is allowed
    assert stage.history == [1.5]


def test_planned_range_is_checked_before_the_first_move() -> None:
    safe, stage, _ = bench()
    with pytest.raises(MotionRefused):
        safe.check_range([1.0, 2.0, 3.5])
    assert stage.history == []


def test_guarded_move_waits_travel_time_and_settles() -> None:
    safe, stage, clock = bench(start_mm=1.0, speed_mm_s=2.0, settle_s=0.05)
    assert safe.move_to(1.8) == pytest.approx(1.8)
    assert not stage.is_moving()
    assert clock.monotonic() == pytest.approx(0.8 / 2.0 + 0.05)
    assert safe.moves == 1 and stage.stopped == 0


@pytest.mark.parametrize("fault_in", ["move_to", "wait"])
@pytest.mark.parametrize(
    "fault",
    [StageFault("limit switch hit"), KeyboardInterrupt(), InterruptedBySignal(15, "SIGTERM")],
    ids=["fault", "ctrl-c", "sigterm"],
)
def test_exception_mid_move_stops_the_stage(fault: BaseException, fault_in: str) -> None:
    safe, stage, _ = bench(start_mm=1.0)
    stage.fault_on_next_move = fault
    stage.fault_in = fault_in  # type: ignore[assignment]
    with pytest.raises(type(fault)):
        safe.move_to(2.0)
    assert stage.stopped == 1
    assert not stage.is_moving()
    halted = stage.position_mm()
    assert 1.0 <= halted < 2.0  # halted where it was, not at the target
    # the fault fires once: the next move completes
    assert safe.move_to(2.0) == pytest.approx(2.0)


def test_timeout_raises_and_stops_partway() -> None:
    safe, stage, clock = bench(start_mm=1.0, speed_mm_s=2.0, timeout_s=0.1)
    with pytest.raises(StageTimeout):
        safe.move_to(1.8)  # needs 0.4 s
    assert stage.stopped >= 1 and not stage.is_moving()
    assert stage.position_mm() == pytest.approx(1.0 + 2.0 * 0.1)
    assert clock.monotonic() == pytest.approx(0.1)


def test_travel_to_splits_into_guarded_steps() -> None:
    safe, stage, _ = bench(start_mm=0.2)
    assert safe.travel_to(2.9) == pytest.approx(2.9)
    assert stage.history == pytest.approx([1.2, 2.2, 2.9])
    steps = [b - a for a, b in zip([0.2, *stage.history[:-1]], stage.history, strict=True)]
    assert max(abs(s) for s in steps) <= 1.0 + 1e-9
    assert safe.moves == 3


class FailingStop(SimStage):
    def stop(self) -> None:
        super().stop()
        raise OSError("port gone while stopping")


def test_a_failing_stop_never_hides_the_error_that_caused_it() -> None:
    clock = SimClock()
    stage = FailingStop(SimStageConfig(start_mm=1.0), clock)
    safe = SafeStage(stage, 0.0, 3.0, 1.0, clock=clock)
    stage.fault_on_next_move = StageFault("limit switch hit")
    with pytest.raises(StageFault, match="limit switch"):
        safe.move_to(2.0)
    assert stage.stopped == 1 and safe.stops == 1


class HomingSim(SimStage):
    """A simulated stage with a homing cycle that can be interrupted."""

    def __init__(self, clock: SimClock, interrupt: BaseException | None = None) -> None:
        super().__init__(SimStageConfig(start_mm=2.0), clock)
        self.homed = False
        self.interrupt = interrupt
        self.home_timeouts: list[float | None] = []

    def is_homed(self) -> bool:
        return self.homed

    def home(self, timeout_s: float | None = None) -> None:
        self.home_timeouts.append(timeout_s)
        self.move_to(0.0)
        if self.interrupt is not None:
            raise self.interrupt
        self.wait(30.0)
        self.homed = True


@pytest.mark.parametrize(
    "interrupt", [KeyboardInterrupt(), InterruptedBySignal(1, "SIGHUP")], ids=["ctrl-c", "sighup"]
)
def test_homing_is_guarded_and_stops_on_any_interruption(interrupt: BaseException) -> None:
    clock = SimClock()
    stage = HomingSim(clock, interrupt)
    safe = SafeStage(stage, 0.0, 3.0, 1.0, clock=clock, home_timeout_s=77.0)
    with pytest.raises(type(interrupt)):
        safe.home()
    assert stage.stopped == 1 and not stage.is_moving()
    assert stage.home_timeouts == [77.0]  # its own timeout, not move_timeout_s


def test_homing_reports_the_position_and_plain_stages_cannot_home() -> None:
    clock = SimClock()
    safe = SafeStage(HomingSim(clock), 0.0, 3.0, 1.0, clock=clock)
    assert not safe.is_homed()
    assert safe.home() == pytest.approx(0.0) and safe.is_homed()
    plain = SafeStage(SimStage(SimStageConfig(), clock), 0.0, 3.0, 1.0, clock=clock)
    assert plain.is_homed()
    with pytest.raises(StageFault, match="no homing cycle"):
        plain.home()
