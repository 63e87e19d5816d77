"""The benchmark scripts still run: they reach into the package's internals, which move.

The fusion benchmark had stopped running (its caching estimator lacked the
`downscale` keyword the refined estimator passes) and nothing said so until it
was rerun; these run each script at its smallest size.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.slow
def test_the_accuracy_benchmark_runs_and_its_intervals_hold_its_numbers(tmp_path: Path) -> None:
    _run("accuracy.py", "--estimator", "reblur", "--per-cell", "1", "--large", "1",
         "--no-real", "--out", str(tmp_path))  # fmt: skip
    rep = json.loads((tmp_path / "accuracy.json").read_text())["estimators"]["reblur"]
    syn = rep["synthetic"]
    lo, hi = syn["bootstrap_95"]["0-8"]["mae_px_95"]
    assert lo <= syn["overall_0_8"]["mae_px"] <= hi
    assert syn["images_scored"]["0-8"] > 0
    assert "## Sampling error" in (tmp_path / "accuracy.md").read_text()


@pytest.mark.slow
def test_the_fusion_benchmark_runs(tmp_path: Path) -> None:
    _run("fusion.py", "--size", "96", "--threads", "1", "--out", str(tmp_path))
    result = json.loads((tmp_path / "fusion.json").read_text())
    assert {row["fusion"] for row in result["fusion"]} >= {"classical", "reblur"}
    assert result["refine"], "the refinement part ran"


@pytest.mark.slow
def test_the_small_blur_benchmark_runs(tmp_path: Path) -> None:
    _run("small_blur.py", "--estimator", "hdme-tiny", "--per-cell", "1", "--edge-images", "3",
         "--out", str(tmp_path))  # fmt: skip
    result = json.loads((tmp_path / "small-blur.json").read_text())
    rows = result["estimators"]["hdme-tiny"].values()
    assert {r["family"] for r in rows} >= {"photos", "dead_leaves"}
    assert sum(r["pixels"] for r in result["edges"]) > 0
    assert "reblur's edge readings" in (tmp_path / "small-blur.md").read_text()


@pytest.mark.slow
def test_the_direction_benchmark_runs(tmp_path: Path) -> None:
    _run("direction.py", "--quick", "--out", str(tmp_path))
    result = json.loads((tmp_path / "direction.json").read_text())
    assert result["trials"] == 30 and result["simulator"][0]["raw"]["trials"] > 0
    assert "direction" in (tmp_path / "direction.md").read_text().lower()


@pytest.mark.slow
def test_the_autofocus_benchmark_runs(tmp_path: Path) -> None:
    _run("autofocus.py", "--trials", "1", "--no-pcb", "--no-flake", "--out", str(tmp_path))
    result = json.loads((tmp_path / "autofocus.json").read_text())
    methods = {t["method"] for t in result["simulator"]["trials"]}
    assert {"hybrid/auto", "hdme/auto", "brent"} <= methods
    assert result["cross_scene"]["trials"], "calibrate once, focus anywhere ran"
    assert "# Autofocus benchmark" in (tmp_path / "autofocus.md").read_text()
