"""End to end over a real serial link: emulated stage, simulated camera, instrument layer, CLI."""

from __future__ import annotations

import threading
import types
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from hdme_focus.cli import hardware_cmd
from hdme_focus.cli.app import app
from hdme_focus.cli.hardware_cmd import emulator_config, start_emulator
from hdme_focus.config import InstrumentConfig, load_config, to_toml
from hdme_focus.drivers.base import CommunicationError
from hdme_focus.drivers.emulators import PtyEmulator
from hdme_focus.instrument.devices import open_instrument
from hdme_focus.instrument.sweep import default_rois, plan_positions, run_sweep
from hdme_focus.records import load_sweep

STEP_MM = 0.2


def small_config(kind: str, port: str, speed_mm_s: float = 50.0) -> InstrumentConfig:
    cfg = emulator_config(kind, port, "grbl", speed_mm_s)
    data = cfg.model_dump()
    data["camera"] |= {"width_px": 160, "height_px": 120}
    data["stage"] |= {"settle_s": 0.0, "move_timeout_s": 5.0}
    data["stage"]["serial"]["timeout_s"] = 0.5
    return InstrumentConfig.model_validate(data)


@pytest.fixture
def grbl() -> Iterator[PtyEmulator]:
    emu = start_emulator("gcode", "grbl", start_mm=1.0, speed_mm_s=50.0, homed=True)
    yield emu
    emu.close()


def test_sweep_over_emulated_gcode_stage_finds_each_focus(
    grbl: PtyEmulator, tmp_path: Path
) -> None:
    cfg = small_config("gcode", grbl.port)
    positions = plan_positions(0.0, 3.0, STEP_MM)
    with open_instrument(cfg) as inst:
        rois = default_rois(inst)
        out = run_sweep(inst, positions, rois, tmp_path / "sweep")
        truths = {n: inst.camera.focus_position_mm(r.as_tuple()) for n, r in rois.items()}  # type: ignore[attr-defined]
    record = load_sweep(out)
    assert record.status == "complete" and len(record) == len(positions)
    assert np.allclose(record.positions_mm, positions, atol=1e-3)  # positions came over the wire
    for name, true_mm in truths.items():
        peak_mm = record.positions_mm[int(np.argmax(record.roi_values(name, "tenengrad")))]
        assert abs(peak_mm - true_mm) <= STEP_MM + 1e-9, (name, peak_mm, true_mm)
    moves = grbl.received_text().count("G1 Z")
    assert moves == len(positions)  # one guarded move per frame, nothing else on the wire


@pytest.mark.parametrize("kind", ["zaber", "apt"])
def test_short_sweep_over_the_other_protocols(kind: str, tmp_path: Path) -> None:
    emu = start_emulator(kind, "grbl", start_mm=1.0, speed_mm_s=50.0, homed=True)
    try:
        with open_instrument(small_config(kind, emu.port)) as inst:
            out = run_sweep(
                inst, plan_positions(1.0, 1.8, 0.2), default_rois(inst), tmp_path / kind
            )
        record = load_sweep(out)
        assert record.status == "complete"
        assert np.allclose(record.positions_mm, [1.0, 1.2, 1.4, 1.6, 1.8], atol=1e-3)
    finally:
        emu.close()


def test_device_vanishing_mid_sweep_keeps_a_partial_record(tmp_path: Path) -> None:
    emu = start_emulator("gcode", "grbl", start_mm=0.0, speed_mm_s=2.0, homed=True)
    try:
        cfg = small_config("gcode", emu.port, speed_mm_s=2.0)

        def progress(done: int, total: int, position_mm: float) -> None:
            if done == 3:  # the 4th move loses the port 20 ms in
                emu.faults.disconnect_after_s = 0.02

        with (
            pytest.raises(CommunicationError, match="lost the connection"),
            open_instrument(cfg) as inst,
        ):
            run_sweep(inst, plan_positions(0.0, 1.0, 0.1), default_rois(inst), tmp_path / "s",
                      progress=progress)  # fmt: skip
        record = load_sweep(tmp_path / "s")
        assert record.status == "partial" and len(record) == 3
        assert "lost the connection" in (record.reason or "")
        assert not emu.moving
    finally:
        emu.close()


def test_cli_stage_and_sweep_over_an_emulated_port(grbl: PtyEmulator, tmp_path: Path) -> None:
    path = tmp_path / "emu.toml"
    path.write_text(to_toml(small_config("gcode", grbl.port)), encoding="utf-8")
    runner = CliRunner()
    result = runner.invoke(app, ["stage", "status", "-c", str(path)])
    assert result.exit_code == 0, result.output
    assert "position:    1.0000 mm" in result.output
    result = runner.invoke(app, ["stage", "move", "3.5", "-c", str(path)])
    assert result.exit_code == 2 and "soft limits" in result.output
    assert "Z3.5" not in grbl.received_text()
    result = runner.invoke(app, ["stage", "move", "1.5", "-c", str(path)])
    assert result.exit_code == 0 and "position 1.5000 mm" in result.output
    out = tmp_path / "sweep"
    args = ["sweep", "-c", str(path), "--start", "1.0", "--stop", "2.0", "--step", "0.5"]
    result = runner.invoke(app, [*args, "--no-plot", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert load_sweep(out).status == "complete"


def test_stage_commands_refuse_the_simulator_with_the_fix() -> None:
    result = CliRunner().invoke(app, ["stage", "status"])
    assert result.exit_code == 2 and "hdme-focus emulate" in result.output


def test_emulate_prints_its_port_and_writes_a_config(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    served = threading.Event()

    def sleep(_s: float) -> None:  # one serving tick, then "Ctrl-C"
        served.set()
        raise KeyboardInterrupt

    monkeypatch.setattr(hardware_cmd, "time", types.SimpleNamespace(sleep=sleep))
    path = tmp_path / "emu.toml"
    result = CliRunner().invoke(
        app, ["emulate", "gcode", "--dialect", "marlin", "--write-config", str(path)]
    )
    assert result.exit_code == 0, result.output
    assert served.is_set() and "emulator stopped" in result.output
    cfg = load_config(path)
    assert cfg.stage.driver == "gcode" and cfg.stage.dialect == "marlin"
    assert cfg.stage.home_on_connect and cfg.camera.driver == "sim"
    assert cfg.stage.serial.port is not None and cfg.stage.serial.port in result.output
    result = CliRunner().invoke(app, ["emulate", "canbus"])
    assert result.exit_code == 2 and "gcode, zaber, apt" in result.output
