"""Start-up cost: commands import only what they use (torch alone takes seconds to import).

Each check runs in a fresh interpreter, since this test process has long imported
everything, and asserts on `sys.modules`, not on time.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "scipy", "matplotlib", "skimage", "onnxruntime")


def _imported_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=True
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _heavy(modules: set[str]) -> list[str]:
    return [m for m in HEAVY if m in modules]


@pytest.mark.parametrize("argv", [["--help"], ["config", "show"], ["autofocus", "--help"]])
def test_help_and_config_show_import_no_heavy_library(argv: list[str]) -> None:
    code = (
        "from hdme_focus.cli.app import app\n"
        f"try:\n    app({argv!r}, prog_name='hdme-focus')\nexcept SystemExit:\n    pass"
    )
    assert _heavy(_imported_after(code)) == []


def test_the_autofocus_decisions_and_calibration_load_without_scipy() -> None:
    # scipy.optimize is for fitting (calibrate) and searching (brent/sweep): ~0.3 s otherwise
    code = "import hdme_focus.instrument.autofocus, hdme_focus.calibration.model"
    assert "scipy" not in _imported_after(code)


def test_the_client_imports_neither_numpy_nor_the_cli() -> None:
    modules = _imported_after("import hdme_focus.client")
    assert "numpy" not in modules and "typer" not in modules
