"""The optional ONNX Runtime path: the same sigma maps and name as torch, without importing torch.

Skipped where the `onnx` extra (onnxruntime) is not installed; the one-line
error for a missing runtime is checked everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from hdme_focus.core.errors import UsageError
from hdme_focus.estimation import onnx_runtime
from hdme_focus.estimation.registry import load_estimator
from hdme_focus.estimation.weights import default_weights_path


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")  # the exporter writes the graph through it
    if not default_weights_path().is_file():
        pytest.skip("shipped weights not installed")
    cache = tmp_path_factory.mktemp("onnx-cache")
    assert onnx_runtime.load_onnx_estimator(default_weights_path(), cache) is not None
    return cache


def _frame(h: int, w: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    sharp = rng.random((h, w)).astype(np.float32)
    return np.asarray(cv2.GaussianBlur(sharp, (0, 0), 2.0), np.float32)


@pytest.mark.parametrize("shape", [(120, 163), (600, 700)])  # padded; tiled beyond 512 px
def test_onnx_reads_the_same_blur_as_torch_under_the_same_name(
    exported: Path, monkeypatch: pytest.MonkeyPatch, shape: tuple[int, int]
) -> None:
    torch_est = load_estimator("hdme-lite", device="cpu")
    monkeypatch.setenv(onnx_runtime.RUNTIME_ENV, "onnx")
    monkeypatch.setenv(onnx_runtime.CACHE_ENV, str(exported))
    onnx_est = load_estimator("hdme-lite", device="cpu")
    assert isinstance(onnx_est, onnx_runtime.OnnxHDMEEstimator)
    assert onnx_est.name == torch_est.name  # calibrations made with one hold for the other
    frame = _frame(*shape)
    a, b = torch_est.predict(frame), onnx_est.predict(frame)
    assert a.shape == b.shape == shape
    assert float(np.max(np.abs(a - b))) < 1e-3 and float(np.median(a)) > 0.5


def test_the_uncertainty_head_gives_the_same_learned_confidence_on_onnx(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    torch_est = load_estimator("hdme-lite-conf", device="cpu")
    monkeypatch.setenv(onnx_runtime.RUNTIME_ENV, "onnx")
    monkeypatch.setenv(onnx_runtime.CACHE_ENV, str(tmp_path))
    onnx_est = load_estimator("hdme-lite-conf", device="cpu")
    assert isinstance(onnx_est, onnx_runtime.OnnxHDMEEstimator)
    frame = _frame(600, 700)  # tiled: both channels are blended across tiles
    a, b = torch_est.estimate(frame), onnx_est.estimate(frame)
    assert a.scale_px is not None and b.scale_px is not None
    assert float(np.max(np.abs(a.sigma_px - b.sigma_px))) < 1e-3
    assert float(np.max(np.abs(a.confidence - b.confidence))) < 1e-3


def test_a_run_with_the_export_cached_never_imports_torch(exported: Path) -> None:
    code = (
        "import sys, json\n"
        "from hdme_focus.estimation.registry import load_estimator\n"
        "est = load_estimator('hdme-lite', device='cpu')\n"
        "import numpy as np\n"
        "est.predict(np.full((64, 64), 0.5, np.float32))\n"
        "print(json.dumps([type(est).__name__, 'torch' in sys.modules]))"
    )
    env = {
        **os.environ,
        onnx_runtime.RUNTIME_ENV: "onnx",
        onnx_runtime.CACHE_ENV: str(exported),
    }
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == ["OnnxHDMEEstimator", False]


def test_without_onnxruntime_the_runtime_says_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    monkeypatch.setenv(onnx_runtime.RUNTIME_ENV, "onnx")
    monkeypatch.setenv(onnx_runtime.CACHE_ENV, str(tmp_path))
    with pytest.raises(UsageError, match=r"pip install 'hdme-focus\[onnx\]'"):
        load_estimator("hdme-lite", device="cpu")
    assert list(tmp_path.iterdir()) == []  # nothing exported for a runtime that cannot run


def test_an_unknown_runtime_or_a_gpu_is_refused_in_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(onnx_runtime.RUNTIME_ENV, "tensorrt")
    with pytest.raises(UsageError, match="choose torch or onnx"):
        load_estimator("hdme-lite", device="cpu")
    monkeypatch.setenv(onnx_runtime.RUNTIME_ENV, "onnx")
    with pytest.raises(UsageError, match="runs on the cpu"):
        load_estimator("hdme-lite", device="cuda")
