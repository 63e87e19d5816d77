"""HDME-Net behind the estimator interface: frame in, sigma map (px) out.

Inference pads to the network's multiple (reflect) and crops back; frames
larger than a tile are processed in overlapping tiles blended with a smooth
window, so tile borders leave no seams. The frame is standardised once, on the
whole frame, before tiling, exactly as training standardises each whole
training crop. Weights are read by `weights.read_weights`; estimators are
created by name in `registry`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike, NDArray

from hdme_focus.core.frame import F32, saturation_mask, to_gray_float
from hdme_focus.estimation.base import (
    DefocusEstimate,
    GrayEstimator,
    check_downscale,
    confidence_from_scale,
    enlarge,
    shrink,
)
from hdme_focus.estimation.devices import Device, resolve_device
from hdme_focus.estimation.model import HDMENet, fuse_for_inference, standardize
from hdme_focus.estimation.tiling import starts as _starts
from hdme_focus.estimation.tiling import window as _window
from hdme_focus.estimation.weights import ERROR_SCALE_KEY

DEFAULT_TILE_PX = 512
DEFAULT_OVERLAP_PX = 64


class HDMEEstimator(GrayEstimator):
    """HDME-Net: per-pixel sigma from the network.

    Confidence: from the network's own error scale when the preset has an
    uncertainty head (`base.confidence_from_scale`), else `base.texture_confidence`.
    """

    def __init__(
        self,
        model: HDMENet,
        *,
        sigma_max_px: float,
        name: str = "hdme-net",
        device: str | Device | torch.device = Device.AUTO,
        half: bool | None = None,
        tile_px: int = DEFAULT_TILE_PX,
        overlap_px: int = DEFAULT_OVERLAP_PX,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.half = self.device.type == "cuda" if half is None else half
        self.multiple = model.config.input_multiple
        if tile_px % self.multiple or tile_px <= 2 * overlap_px:
            raise ValueError(f"tile_px must be a multiple of {self.multiple} and > 2 * overlap_px")
        model = fuse_for_inference(model)
        self.model = model.to(self.device, torch.float16 if self.half else torch.float32)
        self.sigma_max_px = float(sigma_max_px)
        self.name = name
        self.tile_px, self.overlap_px = tile_px, overlap_px
        self.metadata = dict(metadata or {})
        # post-hoc calibration of the learned error scale (train.export); 1 when absent
        self.error_scale = float(self.metadata.get(ERROR_SCALE_KEY, "1.0"))

    def predict_gray(self, gray01: F32) -> F32:
        return np.asarray(self._predict_stack(gray01[None])[0, 0], dtype=np.float32)

    def estimate_gray(self, gray01: F32) -> DefocusEstimate:
        if not self.model.config.uncertainty:
            return super().estimate_gray(gray01)
        out = self._predict_stack(gray01[None])[0]
        sigma = np.asarray(out[0], dtype=np.float32)
        scale = (np.exp(out[1]) * np.float32(self.error_scale)).astype(np.float32)
        conf = confidence_from_scale(scale, self.sigma_max_px)
        conf[saturation_mask(gray01)] = 0.0
        return DefocusEstimate(sigma, conf, scale)

    def predict_batch(
        self, images: Sequence[ArrayLike], bit_depth: int | None = None, *, downscale: float = 1.0
    ) -> list[F32]:
        """Predict several frames; equal-sized frames share forward passes."""
        check_downscale(downscale)
        grays = [to_gray_float(im, bit_depth) for im in images]
        out: list[F32 | None] = [None] * len(grays)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, g in enumerate(grays):
            by_shape.setdefault(g.shape, []).append(i)
        for idx in by_shape.values():
            stack = np.stack([shrink(grays[i], downscale) for i in idx])
            sigmas = self._predict_stack(stack)[:, 0] * np.float32(downscale)
            for i, sig in zip(idx, sigmas, strict=True):
                out[i] = enlarge(sig, grays[i].shape)
        return [o for o in out if o is not None]

    @staticmethod
    def saturated(image: ArrayLike, bit_depth: int | None = None) -> NDArray[np.bool_]:
        """Pixels at the clipping level: their sigma is not trustworthy."""
        return saturation_mask(to_gray_float(image, bit_depth))

    # -- internals
    def _predict_stack(self, stack: NDArray[np.float32]) -> NDArray[np.float32]:
        """[N, C, H, W]: channel 0 sigma_px, channel 1 (uncertainty presets) log b."""
        _, h, w = stack.shape
        x = torch.from_numpy(np.ascontiguousarray(stack))[:, None]
        x = standardize(x)  # on the whole frame, before padding and tiling
        with torch.inference_mode():
            if h <= self.tile_px and w <= self.tile_px:
                y = self._forward_padded(x)
            else:
                y = self._forward_tiled(x)
        return y.numpy().astype(np.float32)

    def _forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        dtype = torch.float16 if self.half else torch.float32
        y: torch.Tensor = self.model(x.to(self.device, dtype)).float().cpu()
        return y[..., :h, :w]

    def _forward_tiled(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        t, ov = self.tile_px, self.overlap_px
        acc = torch.zeros(n, 2 if self.model.config.uncertainty else 1, h, w)
        wsum = torch.zeros(1, 1, h, w)
        for y0 in _starts(h, t, ov):
            for x0 in _starts(w, t, ov):
                tile = x[..., y0 : y0 + t, x0 : x0 + t]
                th, tw = tile.shape[-2:]
                wy = _window(th, ov, y0 > 0, y0 + th < h)
                wx = _window(tw, ov, x0 > 0, x0 + tw < w)
                win = torch.from_numpy(np.outer(wy, wx))[None, None]
                acc[..., y0 : y0 + th, x0 : x0 + tw] += self._forward_padded(tile) * win
                wsum[..., y0 : y0 + th, x0 : x0 + tw] += win
        return acc / wsum
