"""Signals at seeded random moments of stage move, sweep and autofocus (real subprocesses, on
the simulator and the G-code emulator), and a full disk; then the checks a user relies on."""

from __future__ import annotations

import errno
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from hdme_focus.cli.app import app
from hdme_focus.config import CameraConfig, InstrumentConfig, to_toml
from hdme_focus.core.roi import Roi
from hdme_focus.instrument.devices import open_instrument
from hdme_focus.instrument.sweep import plan_positions, run_sweep
from hdme_focus.records import MANIFEST

from .fault_scenarios import COMMANDS, DRIVERS, SIGNALS, check_sweep_record, run_scenario

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="POSIX signals")
runner = CliRunner()

# the CI subset: every signal and every command at least once, both drivers (~25 s)
FAST = [
    ("sweep", "sim", "INT"),
    ("sweep", "sim", "TERM"),
    ("sweep", "sim", "HUP"),
    ("stage-move", "gcode", "TERM"),
    ("stage-move", "gcode", "HUP"),
    ("sweep", "gcode", "TERM"),
    ("autofocus", "gcode", "INT"),
]


@pytest.mark.parametrize(("kind", "driver", "signame"), FAST)
def test_signal_stops_the_stage_and_keeps_a_truthful_record(
    kind: str, driver: str, signame: str, tmp_path: Path
) -> None:
    outcome = run_scenario(kind, driver, signame, seed=0, workdir=tmp_path)
    assert outcome.signalled, "the command ended before the signal; lengthen the scenario"
    assert outcome.problems == [], outcome
    assert outcome.moves_past_limits == 0


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("HDME_FOCUS_SLOW"),
    reason="~3 min; set HDME_FOCUS_SLOW=1 or run benchmarks/reliability.py",
)
@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("signame", sorted(SIGNALS))
@pytest.mark.parametrize("driver", DRIVERS)
@pytest.mark.parametrize("kind", COMMANDS)
def test_signal_matrix(kind: str, driver: str, signame: str, seed: int, tmp_path: Path) -> None:
    if driver == "sim" and kind != "sweep":
        pytest.skip("simulated moves take no wall time: no moment to signal")
    outcome = run_scenario(kind, driver, signame, seed=seed, workdir=tmp_path)
    assert outcome.problems == [], outcome


# --------------------------------------------------------------------------- full disk


def _disk_fills_after(monkeypatch: pytest.MonkeyPatch, frames: int) -> None:
    """A fake writer: the frame write after `frames` of them fails with ENOSPC."""
    import hdme_focus.records as records

    real = records.write_frame_tiff
    count = {"n": 0}

    def write(path: Path, *args: Any, **kwargs: Any) -> None:
        count["n"] += 1
        if count["n"] > frames:
            path.write_bytes(b"II*\x00 half a frame")  # what a full disk leaves behind
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        real(path, *args, **kwargs)

    monkeypatch.setattr(records, "write_frame_tiff", write)


def test_full_disk_mid_sweep_leaves_a_valid_partial_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _disk_fills_after(monkeypatch, 4)
    cfg = InstrumentConfig(camera=CameraConfig(width_px=160, height_px=120))
    out = tmp_path / "s"
    with open_instrument(cfg) as inst:
        with pytest.raises(OSError, match="No space left"):
            run_sweep(inst, plan_positions(0.5, 1.5, 0.1), {"c": Roi(40, 30, 80, 60)}, out)
        assert not inst.stage.stage.is_moving()  # type: ignore[attr-defined]
    manifest = json.loads((out / MANIFEST).read_text())
    assert manifest["status"] == "partial" and manifest["rows"] == 4
    assert "No space left" in manifest["reason"]
    problems = [p for p in check_sweep_record(out, "TERM", 1) if "lacks" not in p]
    assert problems == []  # the half-written fifth frame is gone, the rest reads


def test_full_disk_in_the_cli_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _disk_fills_after(monkeypatch, 2)
    cfg = InstrumentConfig(camera=CameraConfig(width_px=160, height_px=120))
    config = tmp_path / "i.toml"
    config.write_text(to_toml(cfg))
    args = ["sweep", "--start", "0.9", "--stop", "1.3", "--step", "0.1", "--no-plot"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "s"), "-c", str(config)])
    assert result.exit_code == 2, result.output
    assert "No space left on device" in result.stderr and "Traceback" not in result.output
