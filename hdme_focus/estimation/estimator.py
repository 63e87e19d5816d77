"""The public estimation API: load HDME-Net weights and turn any frame into a sigma map.

Weights are safetensors (no pickled code); the header carries everything needed
to rebuild the network and use it correctly: the architecture, the trained
sigma range and the input normalisation. Inference pads to the network's
multiple (reflect) and crops back; frames larger than a tile are processed in
overlapping tiles blended with a smooth window, so tile borders leave no seams.
The frame is standardised once, on the whole frame, before tiling, exactly as
training standardises each whole training crop.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import ArrayLike, NDArray

from hdme_focus.core.errors import UsageError
from hdme_focus.core.frame import F32, ImageInputError, saturation_mask, to_gray_float
from hdme_focus.estimation.base import DefocusEstimator
from hdme_focus.estimation.model import (
    DEFAULT_PRESET,
    PRESETS,
    HDMENet,
    HDMENetConfig,
    build_model,
    fuse_for_inference,
    standardize,
)

WEIGHTS_FORMAT = "hdme-focus-weights/1"
NORMALIZATION = "per-frame-standardize"
DEFAULT_TILE_PX = 512
DEFAULT_OVERLAP_PX = 64


class WeightsError(UsageError):
    """A weights file that cannot be used; str() is one user-facing line."""


# --------------------------------------------------------------------------- weights I/O


def save_weights(
    path: Path | str,
    model: HDMENet,
    *,
    preset: str | None,
    sigma_max_px: float,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write model tensors + a self-describing header (architecture, sigma range, normalisation)."""
    from safetensors.torch import save_file

    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tensors = {
        k: v.detach().to("cpu", torch.float32).contiguous() for k, v in model.state_dict().items()
    }
    tensors = {k: v for k, v in tensors.items() if not k.endswith("num_batches_tracked")}
    meta = {
        "format": WEIGHTS_FORMAT,
        "preset": preset or "custom",
        "config": model.config.model_dump_json(),
        "sigma_max_px": repr(float(sigma_max_px)),
        "normalization": NORMALIZATION,
    }
    for k, v in (extra or {}).items():
        meta[k] = v if isinstance(v, str) else json.dumps(v)
    tmp = p.with_suffix(p.suffix + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    tmp.replace(p)  # never leave a half-written weights file
    p.chmod(0o644)  # the writer makes it owner-only; weights are meant to be shared
    return p


def read_weights(path: Path | str) -> tuple[HDMENet, dict[str, str]]:
    """Rebuild the network from a weights file; WeightsError with the reason if it is unusable."""
    from safetensors import safe_open

    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(str(p))
    try:
        with safe_open(str(p), framework="pt") as fh:
            meta = dict(fh.metadata() or {})
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118
    except Exception as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsError(f"{p} is not a readable safetensors file ({first})") from None
    if meta.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(
            f"{p} is not an hdme-focus weights file (header format {meta.get('format')!r}, "
            f"expected {WEIGHTS_FORMAT!r}); export it with `hdme-focus train`"
        )
    if meta.get("normalization") != NORMALIZATION:
        raise WeightsError(f"{p}: unsupported input normalisation {meta.get('normalization')!r}")
    try:
        config = HDMENetConfig.model_validate_json(meta["config"])
        float(meta["sigma_max_px"])
    except Exception as exc:
        raise WeightsError(f"{p}: invalid architecture header ({type(exc).__name__})") from None
    model = build_model(config)
    expected = {
        k: v.shape for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")
    }
    problems = [f"missing {k}" for k in sorted(set(expected) - set(tensors))]
    problems += [f"unexpected {k}" for k in sorted(set(tensors) - set(expected))]
    problems += [
        f"{k} has shape {tuple(tensors[k].shape)}, expected {tuple(expected[k])}"
        for k in sorted(expected.keys() & tensors.keys())
        if tensors[k].shape != expected[k]
    ]
    if problems:
        raise WeightsError(
            f"{p}: tensors do not match the {meta.get('preset')} architecture "
            f"({problems[0]}; {len(problems)} problem(s))"
        )
    model.load_state_dict(tensors, strict=False)
    model.eval()
    return model, meta


def default_weights_path() -> Path:
    """The weights shipped inside the package."""
    return shipped_weights_path(DEFAULT_PRESET)


def shipped_weights_path(preset: str) -> Path:
    """Where the package keeps trained weights of a preset (the file may not exist)."""
    return Path(str(resources.files("hdme_focus.estimation") / "weights" / f"{preset}.safetensors"))


# --------------------------------------------------------------------------- devices


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """auto: CUDA, then Apple MPS, then CPU."""
    if str(device) != "auto":
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ImageInputError(
                "device 'cuda' requested but no CUDA GPU is available; use --device cpu"
            )
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


# --------------------------------------------------------------------------- tiling


def _window(n: int, overlap: int, ramp_start: bool, ramp_end: bool) -> NDArray[np.float32]:
    """1-D blending weight: raised-cosine ramps of `overlap` px on sides that meet a neighbour."""
    w = np.ones(n, dtype=np.float32)
    ramp = 0.5 - 0.5 * np.cos(np.pi * (np.arange(overlap, dtype=np.float32) + 0.5) / overlap)
    if ramp_start:
        w[:overlap] = ramp
    if ramp_end:
        w[n - overlap :] = np.minimum(w[n - overlap :], ramp[::-1])
    return w


def _starts(length: int, tile: int, overlap: int) -> list[int]:
    if length <= tile:
        return [0]
    step = tile - overlap
    n = math.ceil((length - tile) / step) + 1
    return [round(i * (length - tile) / (n - 1)) for i in range(n)]


class HDMEEstimator:
    """HDME-Net behind the `DefocusEstimator` protocol: frame in, sigma_px map out."""

    def __init__(
        self,
        model: HDMENet,
        *,
        sigma_max_px: float,
        name: str = "hdme-net",
        device: str | torch.device = "auto",
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

    # -- the protocol
    def predict(
        self, image: ArrayLike, bit_depth: int | None = None, downscale: float = 1.0
    ) -> F32:
        """HxW float32 sigma in px of the frame's own pixels.

        downscale=k > 1 estimates on the frame resized by 1/k and multiplies
        sigma by k: blur up to k * sigma_max becomes measurable, at k times
        coarser resolution of the map.
        """
        return self.predict_batch([image], bit_depth=bit_depth, downscale=downscale)[0]

    def predict_batch(
        self, images: Sequence[ArrayLike], bit_depth: int | None = None, downscale: float = 1.0
    ) -> list[F32]:
        """Predict several frames; equal-sized frames share forward passes."""
        if downscale < 1.0:
            raise ImageInputError(f"downscale must be >= 1, got {downscale}")
        grays = [to_gray_float(im, bit_depth) for im in images]
        out: list[F32 | None] = [None] * len(grays)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, g in enumerate(grays):
            by_shape.setdefault(g.shape, []).append(i)
        for idx in by_shape.values():
            stack = np.stack([grays[i] for i in idx])
            for i, sig in zip(idx, self._predict_gray(stack, downscale), strict=True):
                out[i] = sig
        return [o for o in out if o is not None]

    @staticmethod
    def saturated(image: ArrayLike, bit_depth: int | None = None) -> NDArray[np.bool_]:
        """Pixels at the clipping level: their sigma is not trustworthy."""
        return saturation_mask(to_gray_float(image, bit_depth))

    # -- internals
    def _predict_gray(self, stack: NDArray[np.float32], downscale: float) -> NDArray[np.float32]:
        _, h, w = stack.shape
        if downscale > 1.0:
            sh, sw = max(8, round(h / downscale)), max(8, round(w / downscale))
            small = np.stack([cv2.resize(g, (sw, sh), interpolation=cv2.INTER_AREA) for g in stack])
            sig = self._predict_gray(small, 1.0) * np.float32(downscale)
            return np.stack([cv2.resize(s, (w, h), interpolation=cv2.INTER_LINEAR) for s in sig])
        x = torch.from_numpy(np.ascontiguousarray(stack))[:, None]
        x = standardize(x)  # on the whole frame, before padding and tiling
        with torch.inference_mode():
            if h <= self.tile_px and w <= self.tile_px:
                y = self._forward_padded(x)
            else:
                y = self._forward_tiled(x)
        return y[:, 0].numpy().astype(np.float32)

    def _forward_padded(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        m = self.multiple
        ph, pw = (-h) % m, (-w) % m
        if ph or pw:
            mode = "reflect" if ph < h and pw < w else "replicate"
            x = F.pad(x, (0, pw, 0, ph), mode=mode)
        dtype = torch.float16 if self.half else torch.float32
        y = self.model(x.to(self.device, dtype)).float().cpu()
        return y[..., :h, :w]

    def _forward_tiled(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        t, ov = self.tile_px, self.overlap_px
        acc = torch.zeros(n, 1, h, w)
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


def predict_downscaled(
    estimator: DefocusEstimator, image: ArrayLike, downscale: float, bit_depth: int | None = None
) -> F32:
    """Any estimator on the frame resized by 1/k, sigma scaled back by k (blur beyond its range)."""
    if downscale < 1.0:
        raise ImageInputError(f"downscale must be >= 1, got {downscale}")
    if isinstance(estimator, HDMEEstimator):
        return estimator.predict(image, bit_depth=bit_depth, downscale=downscale)
    gray = to_gray_float(image, bit_depth)
    if downscale == 1.0:
        return estimator.predict(gray)
    h, w = gray.shape
    small = cv2.resize(
        gray,
        (max(8, round(w / downscale)), max(8, round(h / downscale))),
        interpolation=cv2.INTER_AREA,
    )
    sig = estimator.predict(small) * np.float32(downscale)
    return np.asarray(cv2.resize(sig, (w, h), interpolation=cv2.INTER_LINEAR), dtype=np.float32)


def weights_digest(path: Path | str, length: int = 12) -> str:
    """Leading hex digits of the file's SHA-256: which weights, not just which preset."""
    h = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:length]


def load_estimator(
    name_or_weights: str | Path | None = None, device: str = "auto", **kwargs: Any
) -> DefocusEstimator:
    """None: the shipped default; a path to .safetensors; a shipped preset ('hdme-tiny');
    or a baseline name (e.g. 'reblur')."""
    if name_or_weights is None:
        path = default_weights_path()
        if not path.is_file():
            raise WeightsError(
                f"the default weights {path.name} are not installed with this package"
            )
    else:
        s = str(name_or_weights)
        if s.endswith(".safetensors") or Path(s).is_file():
            path = Path(s)
        elif s in ("hdme", "hdme-net"):
            path = default_weights_path()
        elif s in PRESETS:
            path = shipped_weights_path(s)
            if not path.is_file():
                raise WeightsError(
                    f"no trained weights of {s} ship with this package; train them with "
                    f"`hdme-focus train --preset {s}` and pass the exported file"
                )
        else:
            from hdme_focus.estimation.baselines import get_baseline  # lazy: baselines are optional

            return get_baseline(s, **kwargs)
    model, meta = read_weights(path)
    # the name carries the weights' digest: sweeps and calibrations record it, so a
    # calibration fitted with one set of weights is refused with another of the same preset
    return HDMEEstimator(
        model,
        sigma_max_px=float(meta["sigma_max_px"]),
        name=f"hdme-net:{meta.get('preset', 'custom')}@{weights_digest(path)}",
        device=device,
        metadata=meta,
        **kwargs,
    )
