"""The driver registry: one name -> config model + constructor; every stage comes back guarded."""

from __future__ import annotations

from pathlib import Path

import pytest

from hdme_focus.config import (
    STAGE_MODELS,
    ConfigError,
    GcodeStageConfig,
    InstrumentConfig,
    ZaberStageConfig,
    load_config,
)
from hdme_focus.core.errors import InterruptedBySignal
from hdme_focus.drivers import registry
from hdme_focus.drivers.base import SafeStage
from hdme_focus.drivers.sim import SimClock, SimStage
from hdme_focus.instrument.devices import open_instrument

# What `hdme-focus config show` wrote for a G-code stage before the per-driver
# models: every field of every driver in one table.
FLAT_GCODE_TOML = """
[stage]
driver = "gcode"
min_mm = 0.0
max_mm = 3.0
max_step_mm = 1.0
speed_mm_s = 2.0
settle_s = 0.05
move_timeout_s = 30.0
start_mm = 1.0
backlash_mm = 0.0
position_noise_mm = 0.0
axis = "Z"
dialect = "grbl"
device_address = 1
steps_per_mm = 0.0
feed_mm_min = 300.0
allow_unhomed = false
home_on_connect = false

[stage.serial]
port = "/dev/ttyUSB0"
baudrate = 115200
timeout_s = 2.0
rtscts = false
"""


def test_every_config_driver_has_an_opener_and_back() -> None:
    assert set(STAGE_MODELS) == set(registry.BENCHES) | set(registry.SERIAL_STAGES)


def test_yesterdays_flat_stage_table_still_loads_as_its_driver(tmp_path: Path) -> None:
    path = tmp_path / "old.toml"
    path.write_text(FLAT_GCODE_TOML, encoding="utf-8")
    cfg = load_config(path)
    assert isinstance(cfg.stage, GcodeStageConfig)
    assert cfg.stage.feed_mm_min == 300.0 and cfg.stage.serial.port == "/dev/ttyUSB0"
    assert not hasattr(cfg.stage, "backlash_mm")  # a simulator setting, dropped


@pytest.mark.parametrize(
    ("stage", "expected"),
    [
        ({"driver": "canbus"}, "stage.driver = 'canbus': no such driver"),
        ({"driver": "zaber", "steps_per_mm": -1}, "stage.steps_per_mm = -1"),
        ({"driver": "sim", "home_timeout_s": 5}, "stage.home_timeout_s = 5: unknown field"),
    ],
)
def test_stage_errors_name_the_field_not_the_union(
    tmp_path: Path, stage: dict[str, object], expected: str
) -> None:
    path = tmp_path / "bad.toml"
    body = "\n".join(f"{k} = {v!r}".replace("'", '"') for k, v in stage.items())
    path.write_text(f"[stage]\n{body}\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert expected in str(info.value).replace("'", "'")


class FakeController(SimStage):
    """A serial stage stand-in whose homing cycle is interrupted by a signal."""

    def __init__(self) -> None:
        super().__init__(InstrumentConfig().stage, SimClock())  # type: ignore[arg-type]
        self.closed = False

    def is_homed(self) -> bool:
        return False

    def home(self, timeout_s: float | None = None) -> None:
        self.move_to(0.0)
        raise InterruptedBySignal(15, "SIGTERM")

    def close(self) -> None:
        self.closed = True
        super().close()


def test_homing_on_connect_runs_inside_the_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[FakeController] = []

    def opener(_cfg: object) -> FakeController:
        made.append(FakeController())
        return made[-1]

    monkeypatch.setitem(registry.SERIAL_STAGES, "zaber", opener)
    cfg = InstrumentConfig(stage=ZaberStageConfig(home_on_connect=True, steps_per_mm=1.0))
    with pytest.raises(InterruptedBySignal):
        open_instrument(cfg)
    (stage,) = made
    assert stage.stopped == 1 and not stage.is_moving() and stage.closed


def test_opened_stages_are_guarded_with_the_configured_limits(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(FakeController, "is_homed", lambda self: True)
    monkeypatch.setitem(registry.SERIAL_STAGES, "gcode", lambda _cfg: FakeController())
    cfg = InstrumentConfig(stage=GcodeStageConfig(min_mm=-1.0, max_mm=2.0, max_step_mm=0.5))
    safe = registry.open_stage(cfg)
    assert isinstance(safe, SafeStage) and (safe.min_mm, safe.max_mm) == (-1.0, 2.0)
    assert safe.max_step_mm == 0.5 and safe.home_timeout_s == cfg.stage.home_timeout_s  # type: ignore[union-attr]
    with open_instrument(cfg) as inst:
        assert inst.stage.max_step_mm == 0.5


def test_the_stage_commands_refuse_a_bench_driver_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="hdme-focus emulate"):
        registry.open_stage(InstrumentConfig())
