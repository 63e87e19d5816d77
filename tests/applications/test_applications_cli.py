"""`hdme-focus fuse | magnify | enhance`: the files a user gets, and one line for each mistake."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from hdme_focus.cli.app import app
from hdme_focus.config import CameraConfig, InstrumentConfig
from hdme_focus.core.roi import Roi
from hdme_focus.focus_measures import focus_measures
from hdme_focus.instrument.devices import open_instrument
from hdme_focus.instrument.sweep import default_rois, run_sweep

runner = CliRunner()
FAST = ["--estimator", "focus-measure", "--device", "cpu"]


def _one_error_line(result: Any, *expected: str) -> None:
    assert result.exit_code == 2, result.output
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    for text in expected:
        assert text in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.fixture(scope="module")
def sweep_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = InstrumentConfig(camera=CameraConfig(width_px=160, height_px=120))
    out = tmp_path_factory.mktemp("sweep") / "s"
    with open_instrument(cfg) as inst:
        run_sweep(inst, [1.0, 1.3, 1.6, 1.9], default_rois(inst), out)
    return out


@pytest.fixture(scope="module")
def pngs(tmp_path_factory: pytest.TempPathFactory, sim_sweep: Any) -> list[Path]:
    folder = tmp_path_factory.mktemp("pngs")
    paths = []
    for i, image in enumerate(sim_sweep.stack.images01[2:6]):
        path = folder / f"f{i}.png"
        cv2.imwrite(str(path), np.rint(255 * image).astype(np.uint8))
        paths.append(path)
    return paths


def test_fuse_a_sweep_directory_writes_image_depth_and_confidence(
    sweep_dir: Path, tmp_path: Path
) -> None:
    out = tmp_path / "fused"
    result = runner.invoke(
        app, ["fuse", str(sweep_dir), "--out", str(out), "--method", "hdme", *FAST]
    )
    assert result.exit_code == 0, result.output
    names = {p.name for p in out.iterdir()}
    assert names == {
        "fused.tiff",
        "fused.png",
        "depth_index.tiff",
        "depth_position_mm.tiff",
        "depth_confidence.tiff",
        "depth.png",
    }
    with tifffile.TiffFile(out / "fused.tiff") as tif:
        meta = json.loads(tif.pages.first.description)
        assert tif.asarray().dtype == np.uint16
    assert meta["method"] == "hdme" and meta["estimator"] == "focus-measure"
    assert meta["aligned"] is True and len(meta["inputs"]) == 4
    depth_mm = tifffile.imread(out / "depth_position_mm.tiff")
    assert depth_mm.shape == (120, 160) and depth_mm.min() >= 1.0 and depth_mm.max() <= 1.9
    # a second run must not replace the first one's result
    again = runner.invoke(app, ["fuse", str(sweep_dir), "--out", str(out), *FAST])
    _one_error_line(again, "fused.tiff", "--overwrite")
    forced = runner.invoke(app, ["fuse", str(sweep_dir), "--out", str(out), "--overwrite"])
    assert forced.exit_code == 0, forced.output
    with tifffile.TiffFile(out / "fused.tiff") as tif:
        assert json.loads(tif.pages.first.description)["method"] == "classical"  # the default


def test_fuse_image_files_without_positions(pngs: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "f"
    args = ["fuse", *map(str, pngs), "--out", str(out), "--no-align", "--method", "classical"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert not (out / "depth_position_mm.tiff").exists()
    index = tifffile.imread(out / "depth_index.tiff")
    assert index.min() >= 0.0 and index.max() <= len(pngs) - 1
    fused = cv2.imread(str(out / "fused.png"), cv2.IMREAD_UNCHANGED)
    assert fused.shape == (180, 240) and fused.dtype == np.uint8


def test_fuse_bad_inputs_are_one_line(pngs: list[Path], tmp_path: Path) -> None:
    out = str(tmp_path / "o")
    _one_error_line(runner.invoke(app, ["fuse", str(pngs[0]), "--out", out]), "at least 2 frames")
    _one_error_line(
        runner.invoke(app, ["fuse", str(pngs[0]), str(tmp_path / "nope.png"), "--out", out]),
        "nope.png",
        "no such file",
    )
    small = tmp_path / "small.png"
    cv2.imwrite(str(small), np.zeros((50, 60), np.uint8))
    _one_error_line(
        runner.invoke(app, ["fuse", str(pngs[0]), str(small), "--out", out]), "same size"
    )
    _one_error_line(
        runner.invoke(app, ["fuse", *map(str, pngs), "--out", out, "--method", "best"]),
        "--method 'best'",
    )
    _one_error_line(runner.invoke(app, ["fuse", str(tmp_path), "--out", out]), "not a sweep")
    _one_error_line(
        runner.invoke(
            app, ["fuse", *map(str, pngs), "--out", out, "--method", "hdme", "--estimator", "nope"]
        ),
        "--estimator nope",
    )


def _lap(path: Path, box: tuple[int, int, int, int]) -> float:
    gray = cv2.imread(str(path), cv2.IMREAD_UNCHANGED).astype(np.float32) / 255.0
    return focus_measures(gray, Roi(*box), ["lap_var"])["lap_var"]


@pytest.mark.parametrize("command", ["magnify", "enhance"])
def test_magnify_and_enhance_write_an_image(
    command: str, pngs: list[Path], sim_sweep: Any, tmp_path: Path
) -> None:
    source = pngs[2]  # 1.6 mm: "D" in focus, the background blurred
    out = tmp_path / f"{command}.png"
    result = runner.invoke(app, [command, str(source), "--out", str(out), *FAST])
    assert result.exit_code == 0, result.output
    regions = sim_sweep.camera.scene.regions
    assert _lap(out, regions["D"]) >= 0.98 * _lap(source, regions["D"])
    assert _lap(out, regions["background"]) <= 1.02 * _lap(source, regions["background"])
    tif = tmp_path / f"{command}.tif"
    result = runner.invoke(app, [command, str(source), "--out", str(tif), *FAST, "--no-refine"])
    assert result.exit_code == 0, result.output
    with tifffile.TiffFile(tif) as t:
        assert t.asarray().dtype == np.uint8
        assert json.loads(t.pages.first.description)["estimator"] == "focus-measure"


@pytest.mark.parametrize("command", ["magnify", "enhance"])
def test_magnify_and_enhance_refuse_bad_outputs(
    command: str, pngs: list[Path], tmp_path: Path
) -> None:
    src = str(pngs[0])
    _one_error_line(runner.invoke(app, [command, src, "--out", src, *FAST]), "one of the inputs")
    _one_error_line(
        runner.invoke(app, [command, src, "--out", str(tmp_path / "x.jpg"), *FAST]),
        "unsupported image type .jpg",
    )
    _one_error_line(
        runner.invoke(app, [command, str(tmp_path / "absent.png"), "--out", "y.png"]),
        "absent.png",
        "no such file",
    )
    existing = tmp_path / "exists.png"
    existing.write_bytes(b"someone else's result")
    _one_error_line(
        runner.invoke(app, [command, src, "--out", str(existing), *FAST]), "--overwrite"
    )
    assert existing.read_bytes() == b"someone else's result"
    _one_error_line(
        runner.invoke(
            app, [command, src, "--out", str(tmp_path / "z.png"), "--transition-px", "0", *FAST]
        ),
        "transition",
    )
