"""Start-up cost: commands import only what they use (torch alone takes seconds to import).

Each check runs in a fresh interpreter, since this test process has long imported
everything, and asserts on `sys.modules`, not on time.
"""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from hdme_focus.textures import SCENE_TEXTURES

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


def test_the_simulator_scene_loads_its_textures_without_skimage_io() -> None:
    # skimage.io pulls in scipy; the scene reads the bundled PNGs directly instead
    code = (
        "import numpy as np\nfrom hdme_focus.drivers.sim.scenes import texture\n"
        "texture('coffee', 32, 32, np.random.default_rng(0))"
    )
    modules = _imported_after(code)
    assert "skimage.io" not in modules and "scipy" not in modules


@pytest.mark.parametrize("name", SCENE_TEXTURES)
def test_the_scene_textures_are_the_pixels_skimage_loads(name: str) -> None:
    skimage_data = pytest.importorskip("skimage.data")
    from hdme_focus.drivers.sim.scenes import _skimage_gray

    img = np.asarray(getattr(skimage_data, name)())
    if img.ndim == 3:
        img = cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2GRAY)
    assert np.array_equal(_skimage_gray(name), img.astype(np.float32) / 255.0)
