"""`hdme-focus estimate`: no output replaces another, nothing half-written, no silent blur
for a frame without texture, and messages that point the right way."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import tifffile
from typer.testing import CliRunner

from hdme_focus.cli.app import app

runner = CliRunner()
EST = ["--estimator", "reblur"]


def _texture(seed: int = 0, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.uniform(0, 255, (size, size)).astype(np.float32), (0, 0), 1.5)
    return np.clip(img, 0, 255).astype(np.uint8)


def _png(path: Path, image: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)
    return path


def test_inputs_with_the_same_name_get_distinct_outputs(tmp_path: Path) -> None:
    a = _png(tmp_path / "a" / "sample.png", _texture(0))
    b = _png(tmp_path / "b" / "sample.png", cv2.GaussianBlur(_texture(1), (0, 0), 3))
    out = tmp_path / "out"
    result = runner.invoke(app, ["estimate", str(a), str(b), "--out", str(out), *EST])
    assert result.exit_code == 0, result.output
    tiffs = sorted(p.name for p in out.glob("*.sigma.tiff"))
    assert tiffs == ["a_sample.sigma.tiff", "b_sample.sigma.tiff"]
    ma = np.nanmedian(tifffile.imread(out / "a_sample.sigma.tiff"))
    mb = np.nanmedian(tifffile.imread(out / "b_sample.sigma.tiff"))
    assert mb > ma  # each file holds its own input's result
    assert "a_sample.sigma.tiff" in result.stdout and "b_sample.sigma.tiff" in result.stdout
    assert "renamed" in result.stdout


def test_out_that_is_a_file_is_one_line_exit_2(tmp_path: Path) -> None:
    img = _png(tmp_path / "x.png", _texture())
    target = tmp_path / "results.txt"
    target.write_text("keep me")
    result = runner.invoke(app, ["estimate", str(img), "--out", str(target), *EST])
    assert result.exit_code == 2
    assert "exists and is a file" in result.stderr and "Traceback" not in result.output
    assert target.read_text() == "keep me"


def test_interrupted_write_leaves_no_truncated_png(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from matplotlib.figure import Figure

    def dies_half_way(self: Any, fname: Any, *args: Any, **kwargs: Any) -> None:
        if hasattr(fname, "write"):
            fname.write(b"\x89PNG half")
        else:
            Path(fname).write_bytes(b"\x89PNG half")
        raise KeyboardInterrupt

    monkeypatch.setattr(Figure, "savefig", dies_half_way)
    img = _png(tmp_path / "x.png", _texture())
    out = tmp_path / "out"
    runner.invoke(app, ["estimate", str(img), "--out", str(out), *EST])
    assert not (out / "x.sigma.png").exists()
    assert [p.name for p in out.iterdir() if p.name.endswith(".tmp")] == []


@pytest.mark.parametrize("level", [0, 255])
def test_uniform_frame_is_refused_not_a_blur(tmp_path: Path, level: int) -> None:
    img = _png(tmp_path / "flat.png", np.full((64, 64), level, np.uint8))
    out = tmp_path / "out"
    result = runner.invoke(app, ["estimate", str(img), "--out", str(out), *EST])
    assert result.exit_code == 2
    assert "uniform image" in result.stderr
    assert not list(out.glob("*.sigma.*"))


@pytest.mark.parametrize(("estimator", "learned"), [("reblur", False), ("hdme-lite-conf", True)])
def test_the_confidence_map_is_written_beside_the_sigma_map(
    tmp_path: Path, estimator: str, learned: bool
) -> None:
    """Half textured, half blank: the confidence is higher where blur can be read, and the
    file says whether it is the estimator's own (learned) or the texture heuristic."""
    image = np.full((96, 96), 128, np.uint8)
    image[:, :48] = cv2.resize(_texture(3), (48, 96))
    img = _png(tmp_path / "half.png", image)
    out = tmp_path / "out"
    result = runner.invoke(app, ["estimate", str(img), "--out", str(out), "--estimator", estimator])
    assert result.exit_code == 0, result.output
    with tifffile.TiffFile(out / "half.confidence.tiff") as tf:
        conf = tf.asarray()
        kind = tf.shaped_metadata[0]["confidence"]  # type: ignore[index]
    assert conf.shape == (96, 96) and conf.dtype == np.float32
    assert float(conf.min()) >= 0.0 and float(conf.max()) <= 1.0
    assert float(np.median(conf[:, 8:40])) > float(np.median(conf[:, 60:]))
    assert kind.startswith("learned" if learned else "texture")
    assert ("(learned)" if learned else "(texture)") in result.stdout


def test_clipped_pixels_are_masked(tmp_path: Path) -> None:
    image = _texture()
    image[:, :16] = 255
    img = _png(tmp_path / "clip.png", image)
    out = tmp_path / "out"
    result = runner.invoke(app, ["estimate", str(img), "--out", str(out), *EST])
    assert result.exit_code == 0, result.output
    sigma = tifffile.imread(out / "clip.sigma.tiff")
    assert np.isnan(sigma[:, :16]).all() and np.isfinite(sigma[:, 20:]).all()


def test_messages_name_the_real_problem(tmp_path: Path) -> None:
    folder = tmp_path / "photos"
    folder.mkdir()
    tiny = _png(tmp_path / "tiny.png", np.zeros((1, 1), np.uint8))
    nan = tmp_path / "nan.tif"
    tifffile.imwrite(nan, np.full((32, 32), np.nan, np.float32))
    missing = tmp_path / "gone.png"
    out = tmp_path / "out"
    args = ["estimate", str(folder), str(tiny), str(nan), str(missing), "--out", str(out), *EST]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    err = " ".join(result.stderr.split())
    assert f"{folder}: is a directory" in err
    assert "tiny.png: image is 1x1 px, too small" in err
    assert "nan.tif: image contains NaN" in err
    assert "gone.png: no such file" in err
    assert "4 of 4 image(s)" in err


def test_unwritable_output_is_not_file_not_found(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    img = _png(tmp_path / "x.png", _texture())

    def denied(self: Path, *args: Any, **kwargs: Any) -> None:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "mkdir", denied)
    result = runner.invoke(app, ["estimate", str(img), "--out", str(tmp_path / "ro"), *EST])
    assert result.exit_code == 2
    assert "permission denied" in result.stderr and "not found" not in result.stderr


def test_no_progress_bar_when_not_a_terminal(tmp_path: Path) -> None:
    imgs = [str(_png(tmp_path / f"i{i}.png", _texture(i))) for i in range(3)]
    result = runner.invoke(app, ["estimate", *imgs, "--out", str(tmp_path / "o"), *EST])
    assert result.exit_code == 0, result.output
    assert "━" not in result.output and "\r" not in result.output


def test_a_later_run_does_not_replace_another_inputs_result(tmp_path: Path) -> None:
    a = _png(tmp_path / "a" / "sample.png", _texture(0))
    b = _png(tmp_path / "b" / "sample.png", _texture(1))
    out = tmp_path / "out"
    assert runner.invoke(app, ["estimate", str(a), "--out", str(out), *EST]).exit_code == 0
    first = (out / "sample.sigma.tiff").read_bytes()
    result = runner.invoke(app, ["estimate", str(b), "--out", str(out), *EST])
    assert result.exit_code == 0, result.output
    assert (out / "sample.sigma.tiff").read_bytes() == first
    assert (out / "sample-2.sigma.tiff").exists() and "sample-2.sigma.tiff" in result.stdout
    again = runner.invoke(app, ["estimate", str(a), "--out", str(out), *EST])  # same input
    assert again.exit_code == 0 and "sample.sigma.tiff" in again.stdout
    assert not (out / "sample-3.sigma.tiff").exists()
