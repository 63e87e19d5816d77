"""The command line: every command registered, errors as one line with their kind's exit code,
one estimator loader with one default."""

from __future__ import annotations

from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from hdme_focus.cli import common
from hdme_focus.cli.app import app
from hdme_focus.config import InstrumentConfig, PathsConfig
from hdme_focus.core.errors import DeviceError, RefusedError, UsageError
from hdme_focus.drivers.base import MotionRefused
from hdme_focus.records import SweepExistsError

runner = CliRunner()


def test_every_command_is_registered() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    commands = "sweep calibrate autofocus depth demo train estimate evaluate emulate config stage"
    for name in commands.split():
        assert f" {name} " in result.stdout, name


def _raising(exc: BaseException) -> typer.Typer:
    one = typer.Typer()

    @one.command()
    @common.handle_errors
    def run() -> None:
        raise exc

    return one


@pytest.mark.parametrize(
    ("exc", "code", "line"),
    [
        (UsageError("camera.bit_depth = 7: use 8..16"), 2, "error: camera.bit_depth = 7"),
        (DeviceError("no reply from /dev/ttyUSB0"), 3, "error: device: no reply"),
        (MotionRefused("target 9 mm is outside [0, 3] mm"), 2, "error: target 9 mm"),
        (RefusedError("low-confidence estimate"), 4, "error: low-confidence"),
        (
            SweepExistsError(Path("runs/a")),
            2,
            "error: --out runs/a: already holds a sweep (sweep.json); choose another directory "
            "or pass --overwrite",
        ),
        (FileNotFoundError(2, "No such file", "cal.json"), 2, "error: file not found: cal.json"),
        # a command that moves nothing does not claim to have stopped a stage
        (KeyboardInterrupt(), 130, "interrupted (Ctrl-C): finished outputs kept"),
    ],
)
def test_errors_become_one_line_and_the_exit_code_of_their_kind(
    exc: BaseException, code: int, line: str
) -> None:
    result = runner.invoke(_raising(exc), [])
    assert result.exit_code == code
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(line), result.stderr
    assert "Traceback" not in result.output


def test_a_programming_error_is_not_dressed_up_as_a_user_error() -> None:
    result = runner.invoke(_raising(ZeroDivisionError("bug")), [])
    assert isinstance(result.exception, ZeroDivisionError)


def test_the_default_estimator_has_one_name_under_every_spelling() -> None:
    names = {common.load_estimator(n, "cpu").name for n in (None, "default", "hdme-lite")}
    assert len(names) == 1 and next(iter(names)).startswith(f"hdme-net:{common.DEFAULT_ESTIMATOR}@")


def test_paths_weights_replaces_the_default_only(tmp_path: Path) -> None:
    cfg = InstrumentConfig(paths=PathsConfig(weights=tmp_path / "absent.safetensors"))
    with pytest.raises(common.UserError, match=r"absent\.safetensors"):
        common.load_estimator(None, "cpu", config=cfg)
    assert common.load_estimator("reblur", "cpu", config=cfg).name == "reblur"


@pytest.mark.parametrize(
    ("name", "weights", "message"),
    [
        ("sobel", None, r"--estimator sobel: unknown estimator 'sobel'"),
        ("reblur", Path("w.safetensors"), r"--weights applies to hdme-net only"),
        (None, Path("missing.safetensors"), r"--estimator missing\.safetensors: "),
    ],
)
def test_estimator_mistakes_name_the_flag(
    name: str | None, weights: Path | None, message: str
) -> None:
    with pytest.raises(common.UserError, match=message):
        common.load_estimator(name, "cpu", weights=weights)
