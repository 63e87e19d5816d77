"""Evaluation: metrics wired to the right images, report layout, the `evaluate` command."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import ArrayLike, NDArray
from typer.testing import CliRunner

from hdme_focus.cli import _register, app
from hdme_focus.estimation.evaluate import (
    evaluate,
    markdown_table,
    render_table,
    standard_test_set,
    write_report,
)
from hdme_focus.estimation.synthesis import SynthesisRecipe, make_test_set, save_test_set

_register()
runner = CliRunner()
F32 = NDArray[np.float32]


@pytest.fixture(scope="module")
def tiny() -> dict[str, NDArray[np.float32]]:
    rng = np.random.default_rng(0)
    held = [rng.random((80, 80)).astype(np.float32), rng.random((60, 90)).astype(np.float32)]
    return make_test_set(held, 4, 40, SynthesisRecipe(), seed=5)


class Oracle:
    """Knows every test image's truth: catches images and labels paired out of order."""

    name = "oracle"

    def __init__(self, data: dict[str, F32]) -> None:
        pairs = zip(data["images"], data["sigma_px"], strict=True)
        self.truth = {img.tobytes(): sig for img, sig in pairs}

    def predict(self, image: ArrayLike, bit_depth: int | None = None) -> F32:
        return self.truth[np.asarray(image).tobytes()]


class Constant:
    name = "constant 5px"

    def predict(self, image: ArrayLike, bit_depth: int | None = None) -> F32:
        return np.full(np.asarray(image).shape, 5.0, np.float32)


def test_oracle_scores_perfectly(tiny: dict[str, F32]) -> None:
    report = evaluate(Oracle(tiny), tiny)
    for part in ("all", "textured"):
        assert report[part]["mae_norm"] == 0.0 and report[part]["delta1"] == 1.0
    assert report["n_images"] == 4 and report["image_shape"] == [40, 40]
    assert sum(b["n_pixels"] for b in report["bins"]) == 4 * 40 * 40
    assert set(report["by_map_kind_textured"]) == set(tiny["map_kind"].tolist())


def test_constant_guess_matches_hand_computed_error(tiny: dict[str, F32]) -> None:
    report = evaluate(Constant(), tiny, sigma_max_px=10.0)
    expect = float(np.mean(np.abs(5.0 - tiny["sigma_px"].astype(np.float64)))) / 10.0
    assert report["all"]["mae_norm"] == pytest.approx(expect, rel=1e-6)
    assert report["textured"]["n_pixels"] <= report["all"]["n_pixels"]


def test_report_renders_and_serialises(tiny: dict[str, F32], tmp_path: Path) -> None:
    report = evaluate(Constant(), tiny)
    table = render_table(report)
    assert table.row_count == 2 + len(report["bins_textured"])
    md = markdown_table([report, evaluate(Oracle(tiny), tiny)])
    assert md.count("\n") == 4 and "| oracle |" in md
    back = json.loads(write_report(report, tmp_path / "r.json").read_text())
    assert back["textured"]["mae_norm"] == pytest.approx(report["textured"]["mae_norm"])


def test_wrong_output_shape_is_reported(tiny: dict[str, F32]) -> None:
    class Cropping(Constant):
        name = "cropping"

        def predict(self, image: ArrayLike, bit_depth: int | None = None) -> F32:
            return super().predict(image)[1:]

    with pytest.raises(ValueError, match="cropping returned shape"):
        evaluate(Cropping(), tiny)


def test_standard_test_set_is_cached_and_fixed(tmp_path: Path) -> None:
    a = standard_test_set(2, 32, cache_dir=tmp_path)
    assert len(list(tmp_path.glob("testset-*.npz"))) == 1
    b = standard_test_set(2, 32, cache_dir=tmp_path)
    c = standard_test_set(2, 32)
    np.testing.assert_array_equal(a["images"], b["images"])
    np.testing.assert_array_equal(a["images"], c["images"])


def test_cli_evaluates_a_baseline_and_writes_json(tiny: dict[str, F32], tmp_path: Path) -> None:
    path = save_test_set(tmp_path / "tiny.npz", tiny)
    out = tmp_path / "eval"
    args = ["evaluate", "--estimator", "focus-measure", "--test-set", str(path), "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "focus-measure.json").read_text())
    assert report["n_images"] == 4 and 0.0 <= report["textured"]["mae_norm"] <= 1.0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--estimator", "sobel"], "unknown estimator 'sobel'"),
        (["--estimator", "reblur", "--test-set", "missing.npz"], "file not found"),
        (["--estimator", "reblur", "--weights", "w.safetensors"], "--weights applies"),
    ],
)
def test_cli_user_errors_are_one_line(tmp_path: Path, args: list[str], message: str) -> None:
    result = runner.invoke(app, ["evaluate", *args, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert message in result.output
    assert "Traceback" not in result.output
