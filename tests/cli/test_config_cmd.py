"""`hdme-focus config check`: a bad file is one line on stderr and exit code 2."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from hdme_focus.cli.app import app

runner = CliRunner()


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[stage]\nmax_step_mm = -1\n", "stage.max_step_mm = -1"),
        ("[camera]\nbit_depth = 9\n", "camera.bit_depth = 9"),
        ("[stage]\nspeeed_mm_s = 2\n", "stage.speeed_mm_s"),
        ("[stage]\nmin_mm = 5\nmax_mm = 1\n", "min_mm (5.0) must be below max_mm (1.0)"),
        ("[stage\n", "not valid TOML"),
    ],
)
def test_bad_config_is_one_line_and_exit_2(tmp_path: Path, toml: str, expected: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(toml)
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert expected in lines[0]
    assert str(path) in lines[0]
    assert "Traceback" not in result.output


def test_missing_config_file_is_one_line_and_exit_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["config", "check", str(tmp_path / "absent.toml")])
    assert result.exit_code == 2
    assert "cannot read config file" in result.stderr


def test_good_config_passes_and_show_round_trips(tmp_path: Path) -> None:
    shown = runner.invoke(app, ["config", "show"])
    assert shown.exit_code == 0
    path = tmp_path / "good.toml"
    path.write_text(shown.stdout)
    result = runner.invoke(app, ["config", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert "ok" in result.stdout
