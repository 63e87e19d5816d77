"""Fault-injection scenarios at procedure level, shared by the tests and benchmarks/reliability.py.

A scenario runs one `hdme-focus` command as a real subprocess (on the simulator,
or on the G-code emulator served from this process over a pseudo-terminal),
sends it a signal at a seeded random moment once it is working, and then checks
what a user relies on:

- the process ends with one line and exit 128 + N (no traceback);
- the stage is stopped, and no move was ever commanded outside the soft limits
  (the emulator records every target it was sent);
- a sweep's record is truthful: the manifest is not left "running", says
  "partial" with the signal and the row count (or "complete" with all rows),
  every frame on disk has its CSV row and every row its frame, every file reads.
"""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import tifffile

from hdme_focus.cli.hardware_cmd import emulator_config, start_emulator
from hdme_focus.config import CameraConfig, InstrumentConfig, to_toml
from hdme_focus.drivers.serial.emulators.base import PtyEmulator
from hdme_focus.records import MANIFEST, TABLE, load_sweep

SIGNALS = {"INT": signal.SIGINT, "TERM": signal.SIGTERM, "HUP": signal.SIGHUP}
COMMANDS = ("stage-move", "sweep", "autofocus")
DRIVERS = ("sim", "gcode")
SOFT_LIMITS_MM = (0.0, 3.0)


@dataclass
class Outcome:
    """What one scenario did and which checks failed (empty: the fault was survived)."""

    name: str
    returncode: int
    signalled: bool  # the signal arrived while the command was working
    problems: list[str] = field(default_factory=list)
    moves_past_limits: int = 0
    targets_mm: list[float] = field(default_factory=list)


class RecordingEmulator:
    """A G-code (GRBL) emulator in this process that records every target it is sent."""

    def __init__(self, speed_mm_s: float) -> None:
        self.emu: PtyEmulator = start_emulator("gcode", "grbl", 1.0, speed_mm_s, homed=True)
        self.targets_mm: list[float] = []
        axis = self.emu.axis  # type: ignore[attr-defined]
        real_move = axis.move_to

        def move_to(target_mm: float, speed_mm_s: float | None = None) -> None:
            self.targets_mm.append(float(target_mm))
            real_move(target_mm, speed_mm_s)

        axis.move_to = move_to
        self.axis = axis

    def config(self) -> InstrumentConfig:
        cfg = emulator_config("gcode", self.emu.port, "grbl", self.axis.speed_mm_s)
        cfg.camera = CameraConfig(width_px=160, height_px=120)
        return cfg

    def close(self) -> None:
        self.emu.close()


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "hdme_focus.cli.app", *args]


def _command(kind: str, config: Path, out: Path) -> list[str]:
    c = ["-c", str(config)]
    if kind == "stage-move":
        return _cli("stage", "move", "2.9", "--travel", *c)
    if kind == "sweep":
        return _cli(
            "sweep", "--start", "0.2", "--stop", "2.8", "--step", "0.02", "--out", str(out),
            "--no-plot", *c,
        )  # fmt: skip
    return _cli("autofocus", "--roi", "60,35,10,70", "--method", "sweep", "--json", *c)


def _working(kind: str, out: Path, emu: RecordingEmulator | None) -> Callable[[], bool]:
    """A test for "the command is past start-up and doing its work"."""
    if kind == "sweep":
        return lambda: (out / TABLE).exists()
    if emu is not None:
        return lambda: bool(emu.targets_mm)
    return lambda: False  # sim stage move / autofocus: a fixed start-up delay instead


def check_sweep_record(out: Path, signame: str, returncode: int) -> list[str]:
    """The record tells the truth and every file in it reads."""
    if not (out / MANIFEST).exists():
        return [] if not out.exists() else [f"{out} exists without a manifest"]
    problems: list[str] = []
    manifest = json.loads((out / MANIFEST).read_text())
    with open(out / TABLE, newline="") as fh:
        rows = list(csv.reader(fh))[1:]
    listed = {r[3] for r in rows}
    on_disk = {f"frames/{p.name}" for p in (out / "frames").glob("*.tif")}
    if manifest["status"] == "running":
        problems.append("manifest left 'running'")
    if manifest.get("rows") != len(rows):
        problems.append(f"manifest says {manifest.get('rows')} rows, the CSV has {len(rows)}")
    if on_disk != listed:
        problems.append(
            f"frames without rows {sorted(on_disk - listed)}, rows without frames "
            f"{sorted(listed - on_disk)}"
        )
    if manifest["status"] == "partial":
        reason = str(manifest.get("reason"))
        want = "Ctrl-C" if signame == "INT" else f"SIG{signame}"
        if want not in reason or f"after {len(rows)} of" not in reason:
            problems.append(f"partial manifest reason {reason!r} lacks {want} and the count")
    elif manifest["status"] == "complete" and returncode != 0:
        problems.append(f"manifest 'complete' but the command exited {returncode}")
    try:
        record = load_sweep(out)
        for path in record.frame_paths:
            tifffile.imread(path)
    except Exception as exc:  # any failure to read is the finding
        problems.append(f"record not readable: {exc}")
    return problems


def run_scenario(
    kind: str,
    driver: str,
    signame: str,
    seed: int,
    workdir: Path,
    *,
    max_delay_s: float = 0.6,
    timeout_s: float = 60.0,
) -> Outcome:
    """Run one command, signal it at a seeded moment, check everything afterwards."""
    rng = random.Random(f"{kind}-{driver}-{signame}-{seed}")
    name = f"{kind}/{driver}/SIG{signame}/seed{seed}"
    workdir.mkdir(parents=True, exist_ok=True)
    out = workdir / "sweep"
    emu = RecordingEmulator(speed_mm_s=2.0) if driver == "gcode" else None
    try:
        cfg = emu.config() if emu is not None else _sim_config()
        cfg.paths.output_dir = workdir / "out"
        config = workdir / "instrument.toml"
        config.write_text(to_toml(cfg))
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
        proc = subprocess.Popen(
            _command(kind, config, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        working = _working(kind, out, emu)
        t0 = time.monotonic()
        while proc.poll() is None and not working() and time.monotonic() - t0 < 20.0:
            time.sleep(0.01)
        if not working():
            time.sleep(2.5)  # no visible sign of work: past start-up by now
        time.sleep(rng.uniform(0.0, max_delay_s))
        signalled = proc.poll() is None
        if signalled:
            proc.send_signal(SIGNALS[signame])
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            stdout, stderr = proc.communicate()
            return Outcome(name, -9, signalled, ["did not end after the signal"])
        outcome = Outcome(name, proc.returncode, signalled)
        err = stderr.decode(errors="replace")
        if "Traceback" in err:
            outcome.problems.append("traceback: " + err.strip().splitlines()[-1])
        if signalled and proc.returncode != 0:
            expected = 128 + SIGNALS[signame]
            if proc.returncode != expected:
                outcome.problems.append(f"exit {proc.returncode}, expected {expected}")
            lines = [ln for ln in err.splitlines() if ln.startswith("interrupted")]
            during = len(lines) == 1 and "stage stopped" in lines[0]
            after = len(lines) == 1 and "outside a command's work" in lines[0]
            if not (during or after):
                outcome.problems.append(f"expected one 'interrupted ...' line: {err!r}")
        elif proc.returncode != 0:
            outcome.problems.append(f"exit {proc.returncode} without a signal: {err.strip()!r}")
        if kind == "sweep":
            outcome.problems += check_sweep_record(out, signame, proc.returncode)
        if emu is not None:
            time.sleep(0.05)
            if emu.axis.moving:
                outcome.problems.append(f"stage still moving at {emu.axis.position_mm:.4f} mm")
            lo, hi = SOFT_LIMITS_MM
            outcome.targets_mm = list(emu.targets_mm)
            outcome.moves_past_limits = sum(not lo <= t <= hi for t in emu.targets_mm)
            if outcome.moves_past_limits:
                outcome.problems.append(f"{outcome.moves_past_limits} targets outside [{lo}, {hi}]")
        del stdout
        return outcome
    finally:
        if emu is not None:
            emu.close()


def _sim_config() -> InstrumentConfig:
    return InstrumentConfig(camera=CameraConfig(width_px=160, height_px=120))
