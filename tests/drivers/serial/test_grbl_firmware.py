"""GRBL as its 1.1 interface document defines it: each bug found against real firmware.

Every test here failed on the driver before the fix (status fields with
letters, work offset unknown at connect, units never forced, homing polled
like a plain command, unverified reset after a critical alarm) or on the
emulator before it was made as strict as the firmware.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from hdme_focus.config import GcodeStageConfig
from hdme_focus.drivers.base import SafeStage, StageTimeout
from hdme_focus.drivers.serial.emulators import EmulatedAxis, GcodeEmulator
from hdme_focus.drivers.serial.gcode import GrblAlarm, GrblStage, open_gcode_stage, parse_status
from hdme_focus.drivers.serial.link import SerialLink

REPLY_S = 0.3


def connect(emu: GcodeEmulator, **overrides: Any) -> GrblStage:
    fields: dict[str, Any] = {
        "serial": {"port": emu.port, "timeout_s": REPLY_S},
        "feed_mm_min": 3000.0,
        "move_timeout_s": 2.0,
    }
    stage = open_gcode_stage(GcodeStageConfig(**(fields | overrides)))
    assert isinstance(stage, GrblStage)
    return stage


@pytest.fixture
def emu() -> Iterator[GcodeEmulator]:
    with GcodeEmulator("grbl", EmulatedAxis(position_mm=1.0, speed_mm_s=50.0, homed=True)) as e:
        yield e


def ask(emu: GcodeEmulator, line: str) -> list[str]:
    """Raw exchange with the emulator: every line it answers to `line`, up to ok/error."""
    link = SerialLink(emu.port, timeout_s=REPLY_S, name="GRBL")
    try:
        link.drain()
        link.write(line.encode() if line in ("?", "\x18") else (line + "\n").encode())
        out: list[str] = []
        while (reply := link.read_line()) is not None:
            if reply:
                out.append(reply)
            if reply == "ok" or reply.startswith(("error:", "<")):
                break
        return out
    finally:
        link.close()


# ----------------------------------------------------------------- status fields


def test_status_reports_parse_field_by_field_and_keep_unknown_fields() -> None:
    r = parse_status("<Idle|MPos:1.000,2.000,3.000|Bf:15,128|FS:0,0|Pn:XYZRHS|Ln:99|Zz:q>")
    assert r.state == "Idle" and r.mpos == [1.0, 2.0, 3.0] and r.wpos is None
    assert r.pins == "XYZRHS" and r.fields["Zz"] == "q"
    r = parse_status("<Hold:0|WPos:-1.5,0,0|FS:0,0|Ov:100,100,100|A:F>")
    assert r.wpos == [-1.5, 0.0, 0.0] and r.fields["A"] == "F"
    with pytest.raises(ValueError):
        parse_status("<Idle|MPos:1.0,x,3.0|FS:0,0>")


@pytest.mark.parametrize("pins", ["P", "Z", "XYZRHS"])
def test_pins_and_accessory_fields_never_break_a_command(emu: GcodeEmulator, pins: str) -> None:
    emu.pins = set(pins)
    emu.coolant = True  # `|Ov:...|A:F` every tenth report
    stage = connect(emu)
    safe = SafeStage(stage, 0.0, 3.0, 1.0)
    for _ in range(12):  # past the Ov/A and WCO refreshes
        assert stage.position_mm() == pytest.approx(1.0, abs=1e-3)
    assert safe.move_to(1.5) == pytest.approx(1.5, abs=1e-3)
    stage.stop()
    assert not emu.moving and stage.is_homed()
    stage.close()


# ----------------------------------------------------------------- work offset


def test_work_offset_is_learned_on_connect_not_when_grbl_sends_it() -> None:
    axis = EmulatedAxis(position_mm=1.2, speed_mm_s=50.0, homed=True)
    with GcodeEmulator("grbl", axis, wco_mm=0.2) as emu:
        emu.connected_mid_session(reports_until_wco=20)  # no WCO in the next 20 reports
        stage = connect(emu)
        assert stage.position_mm() == pytest.approx(1.0, abs=1e-3)  # work, not machine
        with pytest.raises(Exception, match="max_step_mm"):
            SafeStage(stage, 0.0, 3.0, 0.5).move_to(1.6)  # 0.6 mm from 1.0, not 0.4 from 1.2
        assert SafeStage(stage, 0.0, 3.0, 0.5).move_to(1.4) == pytest.approx(1.4, abs=1e-3)
        assert emu.axis.position_mm == pytest.approx(1.6, abs=1e-3)  # machine = work + 0.2
        stage.close()


def test_status_mask_wpos_is_read_directly(emu: GcodeEmulator) -> None:
    emu.settings[10] = 0  # $10=0: WPos instead of MPos
    emu.wco_mm = 0.5
    stage = connect(emu)
    assert stage.position_mm() == pytest.approx(0.5, abs=1e-3)
    stage.close()


# ----------------------------------------------------------------- units


def test_controller_left_in_inches_moves_millimetres(emu: GcodeEmulator) -> None:
    emu.inches = True  # someone left GRBL in G20
    stage = connect(emu)
    assert SafeStage(stage, 0.0, 3.0, 1.0).move_to(1.1) == pytest.approx(1.1, abs=1e-3)
    assert emu.axis.position_mm == pytest.approx(1.1, abs=1e-3)  # not 2.54 mm further
    assert "G21 G90 G1 Z1.1000" in emu.received_text()
    stage.close()


def test_report_inches_setting_is_scaled_to_mm(emu: GcodeEmulator) -> None:
    emu.settings[13] = 1  # $13=1: positions reported in inches
    emu.wco_mm = 0.254
    stage = connect(emu)
    assert stage.report_scale == 25.4
    assert stage.position_mm() == pytest.approx(1.0 - 0.254, abs=1e-3)  # not 0.0394
    stage.close()


# ----------------------------------------------------------------- homing


def test_homing_that_outlasts_its_timeout_says_homing_and_stops() -> None:
    axis = EmulatedAxis(position_mm=5.0, speed_mm_s=2.0, homed=False)
    with GcodeEmulator("grbl", axis) as emu:
        stage = connect(emu, home_timeout_s=0.2)
        with pytest.raises(StageTimeout, match=r"homing .*\(stage\.home_timeout_s\)"):
            stage.home()
        assert not emu.moving
        assert "?" in emu.received_text().split("$H")[1]  # status was polled meanwhile
        stage.close()


def test_homing_alarm_is_reported_with_its_meaning() -> None:
    axis = EmulatedAxis(position_mm=5.0, speed_mm_s=2.0, homed=False)
    with GcodeEmulator("grbl", axis) as emu:
        stage = connect(emu)
        emu.faults.alarm_after_s = 0.05  # the switch is never found
        with pytest.raises(GrblAlarm, match=r"ALARM:9.*limit switch"):
            stage.home()
        stage.close()


def test_homed_position_is_minus_the_pull_off(emu: GcodeEmulator) -> None:
    emu.settings[27] = 2.0
    stage = connect(emu)
    stage.home()
    assert stage.position_mm() == pytest.approx(-2.0, abs=1e-3)
    stage.close()


# ----------------------------------------------------------------- alarms and reset


def soft_limited(emu: GcodeEmulator) -> None:
    emu.settings[20] = 1  # soft limits on: travel is the emulated axis's [-5, 25]


def test_soft_limit_alarm_is_reset_and_the_reset_verified(emu: GcodeEmulator) -> None:
    soft_limited(emu)
    stage = connect(emu)
    with pytest.raises(GrblAlarm, match="ALARM:2") as info:
        SafeStage(stage, 0.0, 40.0, 40.0).move_to(30.0)
    assert info.value.reset is True and not emu.critical
    assert emu.axis.position_mm == pytest.approx(1.0)  # nothing moved


def test_a_lost_reset_is_resent(emu: GcodeEmulator) -> None:
    soft_limited(emu)
    emu.faults.lost_resets = 1
    stage = connect(emu)
    with pytest.raises(GrblAlarm) as info:
        SafeStage(stage, 0.0, 40.0, 40.0).move_to(30.0)
    assert info.value.reset is True and emu.resets >= 2 and not emu.critical


def test_a_reset_that_never_arrives_is_said_not_hidden(emu: GcodeEmulator) -> None:
    soft_limited(emu)
    emu.faults.lost_resets = 99
    stage = connect(emu)
    with pytest.raises(GrblAlarm, match="did not confirm the reset") as info:
        SafeStage(stage, 0.0, 40.0, 40.0).move_to(30.0)
    assert info.value.reset is False and emu.critical and "stopped" not in str(info.value)
    stage.close()


def test_without_soft_limits_there_is_no_alarm_2(emu: GcodeEmulator) -> None:
    stage = connect(emu)  # $20=0, as GRBL ships
    SafeStage(stage, 0.0, 40.0, 40.0).move_to(20.0)
    assert emu.axis.position_mm == pytest.approx(20.0) and not emu.alarm
    stage.close()


# ----------------------------------------------------------------- emulator strictness


def test_emulator_speaks_grbl_1_1(emu: GcodeEmulator) -> None:
    assert ask(emu, "$Q") == ["error:2"]
    assert ask(emu, "G5 Z1") == ["error:20"]
    assert ask(emu, "$999=1") == ["error:3"]
    assert ask(emu, "$I") == ["[VER:1.1h.20190825:]", "[OPT:V,15,128]", "ok"]
    assert ask(emu, "$G")[0].startswith("[GC:G0 G54 G17 G21 G90")
    offsets = ask(emu, "$#")
    assert offsets[0].startswith("[G54:") and "[TLO:0.000]" in offsets
    settings = ask(emu, "$$")
    assert "$13=0" in settings and "$27=1.000" in settings and settings[-1] == "ok"
    assert ask(emu, "G20") == ["ok"] and ask(emu, "$G")[0].split()[3] == "G20"


def test_every_line_ending_gets_its_ok(emu: GcodeEmulator) -> None:
    link = SerialLink(emu.port, timeout_s=REPLY_S, name="GRBL")
    link.drain()
    link.write(b"G4 P0\r\n")  # CR ends the line, LF ends an empty one: two oks
    replies = [link.read_line(), link.read_line()]
    assert replies == ["ok", "ok"]
    link.close()


def test_feed_hold_reads_hold_0_and_resume_finishes_the_move(emu: GcodeEmulator) -> None:
    emu.axis.speed_mm_s = 2.0
    link = SerialLink(emu.port, timeout_s=REPLY_S, name="GRBL")
    link.drain()
    link.write(b"G1 Z2 F120\n")
    assert link.read_line() == "ok"
    link.write(b"!")
    link.write(b"?")
    assert (link.read_line() or "").startswith("<Hold:0|")
    link.write(b"~")
    link.write(b"?")
    assert (link.read_line() or "").startswith("<Run|")  # resumed towards Z2
    link.close()
    assert emu.axis.target_mm == pytest.approx(2.0)


def test_wco_comes_right_after_a_reset_and_critical_lock_ignores_lines(
    emu: GcodeEmulator,
) -> None:
    emu.connected_mid_session()
    assert "WCO:" not in ask(emu, "?")[0]
    ask(emu, "\x18")
    assert "WCO:" in ask(emu, "?")[-1]
    soft_limited(emu)
    link = SerialLink(emu.port, timeout_s=REPLY_S, name="GRBL")
    link.drain()
    link.write(b"G1 Z40 F120\n")
    assert link.read_line() == "ALARM:2" and link.read_line() == "[MSG:Reset to continue]"
    link.write(b"$X\n")  # ignored, unanswered, until 0x18
    assert link.read_line(0.2) is None and emu.critical
    link.close()


def test_connecting_to_a_controller_locked_by_an_earlier_alarm_resets_it(
    emu: GcodeEmulator,
) -> None:
    with emu.lock:
        emu.settings[20] = 1
        emu._critical_alarm(2)  # left locked by an earlier run: lines go unanswered
        emu.connected_mid_session()
    stage = connect(emu)
    assert not emu.critical and emu.resets == 1
    assert not stage.is_homed()  # Alarm until unlocked or homed, as GRBL says
    stage.close()
