"""HDME-Net on ONNX Runtime: the same weights and outputs as torch, without importing torch.

Importing torch costs over a second, most of a one-shot `autofocus` command;
onnxruntime imports in a fifth of that and runs the small network as fast on
a CPU. Optional: `pip install 'hdme-focus[onnx]'`, then `HDME_FOCUS_RUNTIME=onnx`.

The ONNX graph is exported from the safetensors weights the first time they
are used (that once, torch is imported) and kept in the cache directory under
the weights' digest, with a JSON card of what inference needs; later runs
read only the cache. The estimator's name is the torch estimator's, so
sweeps and calibrations made with either runtime hold for the other.
Frames are standardised, padded and tiled exactly as `estimator.HDMEEstimator`
does; presets with an uncertainty head export both channels and give the same
learned confidence.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from hdme_focus.core.atomic import atomic_path, write_text_atomic
from hdme_focus.core.errors import UsageError
from hdme_focus.core.frame import F32, saturation_mask
from hdme_focus.estimation.base import DefocusEstimate, GrayEstimator, confidence_from_scale
from hdme_focus.estimation.tiling import starts, window

RUNTIME_ENV = "HDME_FOCUS_RUNTIME"  # "torch" (default) or "onnx"
CACHE_ENV = "HDME_FOCUS_CACHE"
CARD_FORMAT = "hdme-focus-onnx/3"  # /3: "channels", "error_scale_factor" (uncertainty head)
OPSET = 17


def requested_runtime() -> str:
    """The runtime the environment asks for; UsageError (one line) for an unknown one."""
    name = os.environ.get(RUNTIME_ENV, "torch").strip().lower() or "torch"
    if name not in ("torch", "onnx"):
        raise UsageError(f"{RUNTIME_ENV}={name!r}: choose torch or onnx")
    return name


def cache_dir() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "hdme-focus" / "onnx"


def _digest(path: Path, length: int = 12) -> str:
    """SHA-256 prefix of the weights file (as `weights.weights_digest`, without torch)."""
    with path.open("rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()[:length]


def cached_paths(weights: Path, directory: Path | None = None) -> tuple[Path, Path]:
    """(graph, card) in the cache for these weights: keyed by content, never by name alone."""
    base = (directory or cache_dir()) / f"{weights.stem}-{_digest(weights)}"
    return base.with_suffix(".onnx"), base.with_suffix(".json")


def export_onnx(weights: Path, graph: Path, card: Path) -> dict[str, Any] | None:
    """Export HDME-Net weights to an ONNX graph and its card; None for other networks.

    Uses torch (the one time it is needed); both files are written atomically.
    """
    import torch

    from hdme_focus.estimation.estimator import DEFAULT_OVERLAP_PX, DEFAULT_TILE_PX
    from hdme_focus.estimation.model import STD_FLOOR, HDMENet, fuse_for_inference
    from hdme_focus.estimation.weights import ERROR_SCALE_KEY, read_weights, weights_digest

    model, meta = read_weights(weights)
    if not isinstance(model, HDMENet):
        return None
    model = fuse_for_inference(model).float()
    m = model.config.input_multiple
    example = torch.zeros(1, 1, 4 * m, 4 * m)
    graph.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(graph) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            model,
            (example,),
            str(tmp),
            input_names=["x"],
            output_names=["sigma_px"],
            dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}, "sigma_px": {0: "n", 2: "h", 3: "w"}},
            opset_version=OPSET,
            dynamo=False,
        )
    info = {
        "format": CARD_FORMAT,
        "name": f"hdme-net:{meta.get('preset', 'custom')}@{weights_digest(weights)}",
        "sigma_max_px": float(meta["sigma_max_px"]),
        "input_multiple": int(m),
        "std_floor": float(STD_FLOOR),
        "tile_px": DEFAULT_TILE_PX,
        "overlap_px": DEFAULT_OVERLAP_PX,
        "channels": 2 if model.config.uncertainty else 1,  # sigma_px, then log b
        "error_scale_factor": float(meta.get(ERROR_SCALE_KEY, "1.0")),
        "weights": str(weights),
    }
    write_text_atomic(card, json.dumps(info, indent=2) + "\n")
    return info


def _onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise UsageError(
            f"{RUNTIME_ENV}=onnx: onnxruntime is not installed; "
            "pip install 'hdme-focus[onnx]' or unset it"
        ) from None
    return onnxruntime


class OnnxHDMEEstimator(GrayEstimator):
    """HDME-Net through an ONNX Runtime session on the CPU (see the module notes)."""

    def __init__(self, graph: Path, info: dict[str, Any], threads: int | None = None) -> None:
        ort = _onnxruntime()
        opts = ort.SessionOptions()
        n = threads if threads is not None else int(os.environ.get("OMP_NUM_THREADS") or 0)
        opts.intra_op_num_threads = max(n, 0)  # 0: ORT's default (one per core)
        opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(graph), opts, providers=["CPUExecutionProvider"])
        self.name = str(info["name"])
        self.sigma_max_px = float(info["sigma_max_px"])
        self.multiple = int(info["input_multiple"])
        self.std_floor = float(info["std_floor"])
        self.tile_px, self.overlap_px = int(info["tile_px"]), int(info["overlap_px"])
        self.channels = int(info.get("channels", 1))
        self.error_scale = float(info.get("error_scale_factor", 1.0))

    def predict_gray(self, gray01: F32) -> F32:
        return np.asarray(self._forward(gray01)[0, 0], dtype=np.float32)

    def estimate_gray(self, gray01: F32) -> DefocusEstimate:
        if self.channels < 2:
            return super().estimate_gray(gray01)
        out = self._forward(gray01)[0]
        sigma = np.asarray(out[0], dtype=np.float32)
        scale = (np.exp(out[1]) * np.float32(self.error_scale)).astype(np.float32)
        conf = confidence_from_scale(scale, self.sigma_max_px)
        conf[saturation_mask(gray01)] = 0.0
        return DefocusEstimate(sigma, conf, scale)

    def _forward(self, gray01: F32) -> F32:
        """[1, C, H, W] network output of a gray frame (standardised on the whole frame)."""
        x = np.asarray(gray01, dtype=np.float32)[None, None]
        std = max(float(x.std()), self.std_floor)
        x = ((x - x.mean()) / std).astype(np.float32)  # on the whole frame, before tiling
        h, w = x.shape[-2:]
        small = h <= self.tile_px and w <= self.tile_px
        return self._forward_padded(x) if small else self._forward_tiled(x)

    def _forward_padded(self, x: F32) -> F32:
        h, w = x.shape[-2:]
        ph, pw = (-h) % self.multiple, (-w) % self.multiple
        if ph or pw:
            pad = ((0, 0), (0, 0), (0, int(ph)), (0, int(pw)))
            reflect = ph < h and pw < w  # torch's reflect, else replicate
            x = np.pad(x, pad, mode="reflect") if reflect else np.pad(x, pad, mode="edge")
        (y,) = self.session.run(None, {"x": np.ascontiguousarray(x)})[:1]
        return np.asarray(y, dtype=np.float32)[..., :h, :w]

    def _forward_tiled(self, x: F32) -> F32:
        h, w = x.shape[-2:]
        t, ov = self.tile_px, self.overlap_px
        acc = np.zeros((1, self.channels, h, w), np.float32)
        wsum = np.zeros((1, 1, h, w), np.float32)
        for y0 in starts(h, t, ov):
            for x0 in starts(w, t, ov):
                tile = x[..., y0 : y0 + t, x0 : x0 + t]
                th, tw = tile.shape[-2:]
                win = np.outer(
                    window(th, ov, y0 > 0, y0 + th < h), window(tw, ov, x0 > 0, x0 + tw < w)
                )
                acc[..., y0 : y0 + th, x0 : x0 + tw] += self._forward_padded(tile) * win
                wsum[..., y0 : y0 + th, x0 : x0 + tw] += win
        return acc / wsum


def load_onnx_estimator(weights: Path, directory: Path | None = None) -> OnnxHDMEEstimator | None:
    """The ONNX estimator of these weights (exported on first use); None when not exportable."""
    _onnxruntime()  # say it is missing before exporting anything
    graph, card = cached_paths(weights, directory)
    info: dict[str, Any] | None = None
    if graph.is_file() and card.is_file():
        info = json.loads(card.read_text())
        if not isinstance(info, dict) or info.get("format") != CARD_FORMAT:
            info = None
    if info is None:
        info = export_onnx(weights, graph, card)
        if info is None:
            return None
    return OnnxHDMEEstimator(graph, info)
