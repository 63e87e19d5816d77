"""Training and test samples for defocus estimation: spatial-aliasing sampling + known blur.

The HDME-Net recipe: take any photo, shuffle its pixel positions so the result
is perfectly in focus (no spatial correlation left, histogram kept), blur it
with a known per-pixel sigma map, add sensor noise. The network then learns
blur from the image statistics alone, never from what the scene depicts.

Rendering goes through the shared `render.py` (continuous sigma, occlusion-aware
layers, the simulator's noise model), so training data and simulator frames
obey the same physics.

Beyond the paper: the recipe can mix in sharp procedural families with natural
statistics (`sources.PROCEDURAL`: dead leaves, 1/f textures, lines and text,
fluorescence-like), natural photos area-downscaled so their own blur is well
under half a pixel, contrast down to 2 % (log-uniform), the widefield
microscope PSF and the camera's own processing (`camera_effects`). Sigma is
always the PSF's second-moment equivalent: with psf="physical" the disk has
radius 2 sigma (render.py's "disk" uses sqrt(2) sigma, i.e. a second moment of
sigma / sqrt(2) per axis; the "disk" and "mix" recipes keep that for the shipped
weights). Every sample is rendered on a crop padded by a margin of
3 sigma_max and cropped back, so borders carry real blur, not reflection.

A sample is a pure function of (source, rng state, crop size, recipe): the torch
Dataset seeds each item with (seed, index), so DataLoader workers, resumed runs
and other machines see the same samples.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
import torch
from numpy.typing import NDArray
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch.utils.data import Dataset

from hdme_focus import render
from hdme_focus.estimation import camera_effects as cam
from hdme_focus.estimation.sources import (
    FEATURELESS_FAMILIES,
    PROCEDURAL,
    PROCEDURAL_FAMILIES,
    area_downscale,
)

F32 = NDArray[np.float32]
MapKind = Literal["rectangles", "smooth", "layered", "constant"]
MAP_KINDS: tuple[MapKind, ...] = ("rectangles", "smooth", "layered", "constant")


# --------------------------------------------------------------------------- shuffling


def shuffle_pixels(
    image: NDArray[Any], rng: np.random.Generator, mode: Literal["full", "separable"] = "full"
) -> NDArray[Any]:
    """All-in-focus image with the same histogram: permute pixel positions.

    full: one permutation of all pixels (the histogram is kept exactly, all
    spatial correlation destroyed). separable: permute rows, then columns (also
    keeps the histogram; cheaper, and keeps each pixel's row/column company).
    """
    img = np.asarray(image)
    h, w = img.shape[:2]
    if mode == "full":
        flat = img.reshape(h * w, *img.shape[2:])
        return flat[rng.permutation(h * w)].reshape(img.shape)
    if mode == "separable":
        return img[rng.permutation(h)][:, rng.permutation(w)]
    raise ValueError(f"unknown shuffle mode {mode!r}; use 'full' or 'separable'")


# --------------------------------------------------------------------------- sigma maps


def _splits(n: int, rng: np.random.Generator, lo: float = 0.2, hi: float = 0.8) -> tuple[int, ...]:
    cut = round(n * rng.uniform(lo, hi))
    return (0, min(max(cut, 1), n - 1), n) if n >= 2 else (0, n, n)


def sigma_map_rectangles(
    h: int, w: int, rng: np.random.Generator, sigma_max_px: float = 10.0
) -> F32:
    """The paper's map: split at a random point into 4 rectangles, split each again (16).

    Each rectangle gets one sigma drawn uniformly (continuous) from [0, sigma_max].
    """
    out = np.zeros((h, w), dtype=np.float32)
    ys, xs = _splits(h, rng), _splits(w, rng)
    for i in range(2):
        for j in range(2):
            y0, y1, x0, x1 = ys[i], ys[i + 1], xs[j], xs[j + 1]
            sub_y = [y0 + s for s in _splits(y1 - y0, rng)]
            sub_x = [x0 + s for s in _splits(x1 - x0, rng)]
            for a in range(2):
                for b in range(2):
                    out[sub_y[a] : sub_y[a + 1], sub_x[b] : sub_x[b + 1]] = rng.uniform(
                        0.0, sigma_max_px
                    )
    return out


def _smooth_field(h: int, w: int, rng: np.random.Generator) -> NDArray[np.float64]:
    """Zero-based smooth random field in [0, 1]: filtered noise plus a random tilt."""
    scale = rng.uniform(0.08, 0.5) * max(h, w)
    noise = rng.standard_normal((h, w)).astype(np.float32)
    k = 2 * math.ceil(3 * scale) + 1
    blurred = cv2.GaussianBlur(noise, (k, k), sigmaX=scale, borderType=cv2.BORDER_REFLECT_101)
    field: NDArray[np.float64] = np.asarray(blurred, dtype=np.float64)
    field = field / max(float(field.std()), 1e-12)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * xx / max(w, 1) + np.sin(angle) * yy / max(h, 1)) * 2.0
    field = field + rng.uniform(0.0, 3.0) * ramp  # slanted planes: tilted specimens
    field -= field.min()
    top = float(field.max())
    return field / top if top > 0 else field


def sigma_map_smooth(h: int, w: int, rng: np.random.Generator, sigma_max_px: float = 10.0) -> F32:
    """Smooth continuous map (Gaussian-filtered noise + tilt) spanning a random sub-range."""
    a, b = np.sort(rng.uniform(0.0, sigma_max_px, size=2))
    if b - a < 0.1 * sigma_max_px:  # keep some variation in every smooth map
        b = min(sigma_max_px, a + 0.1 * sigma_max_px)
        a = b - 0.1 * sigma_max_px
    out: F32 = (a + (b - a) * _smooth_field(h, w, rng)).astype(np.float32)
    return out


@dataclass(frozen=True)
class LayerSpec:
    """One depth layer of a layered map: coverage (0/1 float) and its own sigma everywhere."""

    alpha: F32
    sigma_px: F32


def _blob_mask(h: int, w: int, rng: np.random.Generator) -> NDArray[np.bool_]:
    kind = rng.integers(3)
    if kind == 0:  # thresholded smooth noise: irregular objects
        field = _smooth_field(h, w, rng)
        return np.asarray(field > np.quantile(field, rng.uniform(0.4, 0.8)))
    if kind == 1:  # a straight occluding edge across the frame
        yy, xx = np.mgrid[0:h, 0:w]
        angle = rng.uniform(0, 2 * math.pi)
        d = np.cos(angle) * (xx - w / 2) + np.sin(angle) * (yy - h / 2)
        return np.asarray(d > rng.uniform(-0.3, 0.3) * min(h, w))
    mask = np.zeros((h, w), dtype=np.uint8)  # a random convex-ish polygon
    cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
    r = rng.uniform(0.15, 0.45) * min(h, w)
    angles = np.sort(rng.uniform(0, 2 * math.pi, size=int(rng.integers(3, 9))))
    radii = r * rng.uniform(0.5, 1.0, size=angles.size)
    pts = np.stack([cx + radii * np.cos(angles), cy + radii * np.sin(angles)], axis=1)
    cv2.fillPoly(mask, [np.round(pts).astype(np.int32)], 1)
    return mask.astype(bool)


def _layer_sigma(h: int, w: int, rng: np.random.Generator, sigma_max_px: float) -> F32:
    if rng.random() < 0.3:  # a gently slanted layer
        return sigma_map_smooth(h, w, rng, sigma_max_px)
    return np.full((h, w), rng.uniform(0.0, sigma_max_px), dtype=np.float32)


def sigma_map_layered(
    h: int, w: int, rng: np.random.Generator, sigma_max_px: float = 10.0
) -> tuple[F32, list[LayerSpec]]:
    """Depth-like scene: a background and 1-3 occluding objects, listed far to near.

    Returns the visible sigma (the nearest covering layer's) and the layers, whose
    sigma is defined everywhere so `render.composite_layers` can blur hidden parts.
    """
    layers = [LayerSpec(np.ones((h, w), np.float32), _layer_sigma(h, w, rng, sigma_max_px))]
    for _ in range(int(rng.integers(1, 4))):
        alpha = _blob_mask(h, w, rng).astype(np.float32)
        layers.append(LayerSpec(alpha, _layer_sigma(h, w, rng, sigma_max_px)))
    visible = np.zeros((h, w), dtype=np.float32)
    for layer in layers:
        visible = np.where(layer.alpha >= 0.5, layer.sigma_px, visible).astype(np.float32)
    return visible, layers


# --------------------------------------------------------------------------- recipe


class MapWeights(BaseModel):
    """Relative frequency of each sigma-map kind (normalised when drawn)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    rectangles: float = Field(default=0.5, ge=0)
    smooth: float = Field(default=0.2, ge=0)
    layered: float = Field(default=0.2, ge=0)
    constant: float = Field(default=0.1, ge=0)

    @model_validator(mode="after")
    def _some_weight(self) -> MapWeights:
        if sum(self.model_dump().values()) <= 0:
            raise ValueError("at least one map weight must be positive")
        return self


class SourceWeights(BaseModel):
    """Relative frequency of each source family: the photos passed in, or a procedural one."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    photos: float = Field(default=1.0, ge=0)
    dead_leaves: float = Field(default=0.0, ge=0)
    power_law: float = Field(default=0.0, ge=0)
    lines_text: float = Field(default=0.0, ge=0)
    fluorescence: float = Field(default=0.0, ge=0)
    blank: float = Field(default=0.0, ge=0)  # featureless fields (see sources.blank)

    @model_validator(mode="after")
    def _some_weight(self) -> SourceWeights:
        if sum(self.model_dump().values()) <= 0:
            raise ValueError("at least one source weight must be positive")
        return self

    @property
    def only_photos(self) -> bool:
        return all(getattr(self, f) == 0 for f in PROCEDURAL_FAMILIES)


SOURCE_FAMILIES: tuple[str, ...] = ("photos", *PROCEDURAL_FAMILIES)


class SynthesisRecipe(BaseModel):
    """How training and test samples are made.

    Defaults follow the paper (fully shuffled sources, Gaussian PSF, continuous
    sigma in [0, 10] px, 16-rectangle maps as the most frequent kind) widened by
    smooth, layered and constant maps, and by the simulator's noise model so a
    real camera's frames are in the training distribution.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    sigma_max_px: float = Field(default=10.0, gt=0)
    shuffle_mode: Literal["full", "separable"] = "full"
    shuffle_fraction: float = Field(default=1.0, ge=0, le=1)  # the rest: natural, unshuffled crops
    map_weights: MapWeights = MapWeights()
    # physical: gaussian, disk (radius 2 sigma) and widefield defocus in equal shares
    psf: Literal["gaussian", "disk", "mix", "physical"] = "gaussian"
    sources: SourceWeights = SourceWeights()
    natural_downscale: int = Field(default=1, ge=1)  # area-downscale unshuffled photo crops
    contrast_log_uniform: bool = False  # draw the contrast span log-uniformly (low contrast)
    camera: cam.CameraEffects | None = None
    full_well_e: tuple[float, float] = (2000.0, 50000.0)  # drawn log-uniformly
    read_noise_e: tuple[float, float] = (0.0, 10.0)
    salt_and_pepper_prob: float = Field(
        default=0.2, ge=0, le=1
    )  # share of samples with impulse noise
    salt_and_pepper_fraction: tuple[float, float] = (0.0, 0.002)
    bit_depths: tuple[int, ...] = (8, 12, 16)
    contrast: tuple[float, float] = (0.2, 1.0)  # range of intensities the texture spans
    # share of sigma draws taken from [0, small_sigma_px] instead of [0, sigma_max_px]:
    # the in-focus range, where a reading decides "focused", gets more than its 1/10th
    small_sigma_fraction: float = Field(default=0.0, ge=0, lt=1)
    small_sigma_px: float = Field(default=2.0, gt=0)

    @model_validator(mode="after")
    def _ranges(self) -> SynthesisRecipe:
        for name in ("full_well_e", "read_noise_e", "salt_and_pepper_fraction", "contrast"):
            lo, hi = getattr(self, name)
            if not 0 <= lo <= hi:
                raise ValueError(f"{name} must be a range (lo, hi) with 0 <= lo <= hi")
        if self.full_well_e[0] <= 0:
            raise ValueError("full_well_e must be positive")
        if self.contrast[1] > 1:
            raise ValueError("contrast must lie in [0, 1]")
        if not self.bit_depths or any(b not in range(1, 17) for b in self.bit_depths):
            raise ValueError("bit_depths must be a non-empty list of values in 1..16")
        return self

    def warp_sigma(self, sigma_px: F32) -> F32:
        """Map sigma drawn uniformly on [0, sigma_max] to the recipe's prior (monotone, so a
        map keeps its structure): the mixture small_sigma_fraction U(0, small_sigma_px) +
        the rest U(0, sigma_max), by its inverse CDF. The identity when the fraction is 0."""
        f, smax = self.small_sigma_fraction, self.sigma_max_px
        a = min(self.small_sigma_px, smax)
        if f <= 0:
            return sigma_px
        grid = np.linspace(0.0, smax, 513)
        cdf = f * np.minimum(grid / a, 1.0) + (1.0 - f) * grid / smax
        return np.asarray(np.interp(sigma_px / smax, cdf, grid), dtype=np.float32)

    @property
    def margin_px(self) -> int:
        """Context rendered around each crop so its borders are blurred by real neighbours."""
        return math.ceil(3.0 * self.sigma_max_px)


# --------------------------------------------------------------------------- samples


def _random_crop(source: F32, size_px: int, rng: np.random.Generator) -> F32:
    """size x size crop; sources smaller than that are mirror-padded (no resampling blur)."""
    h, w = source.shape
    ph, pw = max(0, size_px - h), max(0, size_px - w)
    if ph or pw:
        source = np.pad(source, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2)), "symmetric")
        h, w = source.shape
    y = int(rng.integers(0, h - size_px + 1))
    x = int(rng.integers(0, w - size_px + 1))
    crop = source[y : y + size_px, x : x + size_px]
    crop = np.rot90(crop, int(rng.integers(4)))
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return np.ascontiguousarray(crop, dtype=np.float32)


def _texture(
    source: F32,
    size_px: int,
    rng: np.random.Generator,
    recipe: SynthesisRecipe,
    shuffle: bool,
    family: str = "photos",
) -> F32:
    """An in-focus radiance patch: a crop, shuffled (or not), contrast and brightness jittered.

    Procedural families are drawn fresh (shuffled too when `shuffle`); unshuffled
    photo crops are area-downscaled by natural_downscale first.
    """
    if family != "photos":
        crop = PROCEDURAL[family](size_px, rng)  # type: ignore[index]
    elif not shuffle and recipe.natural_downscale > 1:
        k = recipe.natural_downscale
        crop = area_downscale(_random_crop(source, size_px * k, rng), k)
    else:
        crop = _random_crop(source, size_px, rng)
    if shuffle and family not in FEATURELESS_FAMILIES:  # shuffling would make it texture
        crop = shuffle_pixels(crop, rng, recipe.shuffle_mode)
    lo, hi = float(crop.min()), float(crop.max())
    if recipe.contrast_log_uniform:
        c_lo, c_hi = max(recipe.contrast[0], 1e-3), recipe.contrast[1]
        span = float(np.exp(rng.uniform(np.log(c_lo), np.log(c_hi))))
    else:
        span = rng.uniform(*recipe.contrast)
    if family in FEATURELESS_FAMILIES:  # illumination unevenness: at most a few % of range
        span *= rng.uniform(0.0, 0.2)
    if family == "fluorescence":  # dark background stays dark
        offset = rng.uniform(0.0, min(0.1, 1.0 - span))
    else:
        offset = rng.uniform(0.0, 1.0 - span)
    norm = (crop - lo) / (hi - lo) if hi > lo else np.full_like(crop, 0.5)
    return (offset + span * norm).astype(np.float32)


def _draw_kind(recipe: SynthesisRecipe, rng: np.random.Generator) -> MapKind:
    weights = np.array([getattr(recipe.map_weights, k) for k in MAP_KINDS], dtype=np.float64)
    return MAP_KINDS[int(rng.choice(len(MAP_KINDS), p=weights / weights.sum()))]


def _draw_family(recipe: SynthesisRecipe, rng: np.random.Generator) -> str:
    if recipe.sources.only_photos:  # no draw: the default recipe's samples stay as they were
        return "photos"
    w = np.array([getattr(recipe.sources, f) for f in SOURCE_FAMILIES], dtype=np.float64)
    return SOURCE_FAMILIES[int(rng.choice(len(w), p=w / w.sum()))]


def _apply_camera(
    blurred: F32, rng: np.random.Generator, recipe: SynthesisRecipe
) -> tuple[F32, dict[str, Any]]:
    """Noise and the camera's processing; returns the frame in [0, 1] and what was drawn.

    Without camera effects the draws are exactly the historical ones (noise,
    impulses, bit depth), so the default recipe's test set is unchanged.
    """
    c = recipe.camera or cam.CameraEffects(
        gamma_prob=0, demosaic_prob=0, sharpen_prob=0, jpeg_prob=0
    )
    full_well = float(np.exp(rng.uniform(*np.log(recipe.full_well_e))))
    read_noise = float(rng.uniform(*recipe.read_noise_e))
    bayer = recipe.camera is not None and rng.random() < c.demosaic_prob
    signal, gains = cam.mosaic(blurred, rng) if bayer else (blurred, (1.0, 1.0, 1.0))
    noisy = render.sensor_noise(signal, rng, full_well_e=full_well, read_noise_e=read_noise)
    if bayer:
        noisy = cam.demosaic(np.clip(noisy, 0.0, 1.0), gains)
    info: dict[str, Any] = {"full_well_e": full_well, "read_noise_e": read_noise}
    if recipe.camera is not None:
        info["demosaic"] = bayer
        info["gamma"] = float(rng.uniform(*c.gamma)) if rng.random() < c.gamma_prob else 1.0
        if info["gamma"] != 1.0:
            noisy = np.power(np.clip(noisy, 0.0, 1.0), 1.0 / info["gamma"]).astype(np.float32)
        info["sharpen"] = 0.0
        if rng.random() < c.sharpen_prob:
            info["sharpen"] = float(rng.uniform(*c.sharpen_amount))
            noisy = cam.sharpen(noisy, info["sharpen"], float(rng.uniform(*c.sharpen_radius_px)))
    sp = float(rng.uniform(*recipe.salt_and_pepper_fraction))
    if rng.random() >= recipe.salt_and_pepper_prob:
        sp = 0.0
    noisy = render.salt_and_pepper(noisy, sp, rng)
    info["salt_and_pepper"] = sp
    bits = int(recipe.bit_depths[rng.integers(len(recipe.bit_depths))])
    quality = 0
    if recipe.camera is not None and rng.random() < c.jpeg_prob:
        quality = int(rng.integers(c.jpeg_quality[0], c.jpeg_quality[1] + 1))
        bits = 8
    image = (render.quantize(noisy, bits).astype(np.float32) / float(2**bits - 1)).astype(
        np.float32
    )
    if quality:
        image = cam.jpeg(image, quality)
    info["jpeg_quality"] = quality
    info["bit_depth"] = bits
    return image, info


def make_sample_with_info(
    source: F32, rng: np.random.Generator, crop_px: int, recipe: SynthesisRecipe
) -> tuple[F32, F32, dict[str, Any]]:
    """Like `make_sample`, plus what was drawn: map kind, psf, bit depth, shuffled, noise."""
    if crop_px < 8:
        raise ValueError(f"crop_px must be at least 8, got {crop_px}")
    src = np.asarray(source, dtype=np.float32)
    if src.ndim != 2:
        raise ValueError(f"source must be a 2-D gray image, got shape {src.shape}")
    m = recipe.margin_px
    size = crop_px + 2 * m
    smax = recipe.sigma_max_px
    kind = _draw_kind(recipe, rng)
    psf_name: str
    if recipe.psf == "physical":
        psf_name = ("gaussian", "disk", "widefield")[int(rng.integers(3))]
        if psf_name == "widefield" and kind in ("layered", "smooth"):
            kind = "rectangles"  # the widefield blur is rendered per constant region
    elif recipe.psf == "mix":
        psf_name = ("gaussian", "disk")[int(rng.integers(2))]
    else:
        psf_name = recipe.psf
    psf: render.PSF = "disk" if psf_name == "disk" else "gaussian"
    # render.py's disk has radius sqrt(2) sigma; the physical recipe asks it for radius 2 sigma
    disk_scale = math.sqrt(2.0) if recipe.psf == "physical" and psf_name == "disk" else 1.0
    family = _draw_family(recipe, rng)
    shuffled = bool(rng.random() < recipe.shuffle_fraction)
    texture = _texture(src, size, rng, recipe, shuffled, family)
    if kind == "layered":
        sigma, specs = sigma_map_layered(size, size, rng, smax)
        sigma = recipe.warp_sigma(sigma)
        specs = [LayerSpec(sp.alpha, recipe.warp_sigma(sp.sigma_px)) for sp in specs]
        textures = [texture] + [
            _texture(src, size, rng, recipe, shuffled, family) for _ in specs[1:]
        ]
        top = max(float(s.sigma_px.max()) for s in specs)
    else:
        if kind == "rectangles":
            sigma = sigma_map_rectangles(size, size, rng, smax)
        elif kind == "smooth":
            sigma = sigma_map_smooth(size, size, rng, smax)
        else:
            sigma = np.full((size, size), rng.uniform(0.0, smax), dtype=np.float32)
        sigma = recipe.warp_sigma(sigma)
        top = float(sigma.max())
    # Render only the context this sample's blur reaches (3 sigma): same result, less work.
    need = min(m, math.ceil(3.0 * top * disk_scale) + (6 if psf_name == "widefield" else 0))
    cut = slice(m - need, m + crop_px + need)
    if psf_name == "widefield":
        cutoff = cam.WIDEFIELD_CUTOFFS[int(rng.integers(len(cam.WIDEFIELD_CUTOFFS)))]
        blurred, got = cam.blur_by_levels(texture[cut, cut], sigma[cut, cut], cutoff)
        sigma[cut, cut] = got  # the label is the sigma each pixel's kernel really has
    elif kind == "layered":
        layers = [
            render.Layer(t[cut, cut], s.alpha[cut, cut], s.sigma_px[cut, cut] * disk_scale)
            for t, s in zip(textures, specs, strict=True)
        ]
        blurred = render.composite_layers(layers, psf)
    else:
        blurred = render.blur_spatially_varying(
            texture[cut, cut], sigma[cut, cut] * disk_scale, psf
        )
    blurred = blurred[need : need + crop_px, need : need + crop_px]
    sigma = np.ascontiguousarray(sigma[m : m + crop_px, m : m + crop_px], dtype=np.float32)

    image, info = _apply_camera(blurred, rng, recipe)
    info.update({"map_kind": kind, "psf": psf_name, "shuffled": shuffled, "family": family})
    return image, sigma, info


def make_sample(
    source: F32, rng: np.random.Generator, crop_px: int, recipe: SynthesisRecipe
) -> tuple[F32, F32]:
    """One sample: (image HxW float32 in [0, 1] after noise and quantisation, sigma_px HxW)."""
    image, sigma, _ = make_sample_with_info(source, rng, crop_px, recipe)
    return image, sigma


class SyntheticDefocusDataset(Dataset[tuple[torch.Tensor, torch.Tensor]]):
    """On-the-fly samples; item i is a pure function of (seed, i), so any length is free."""

    def __init__(
        self,
        sources: list[F32],
        length: int,
        crop_px: int,
        recipe: SynthesisRecipe,
        seed: int,
    ) -> None:
        if not sources:
            raise ValueError("no source images to synthesise from")
        self.sources = [np.asarray(s, dtype=np.float32) for s in sources]
        self.length = int(length)
        self.crop_px = int(crop_px)
        self.recipe = recipe
        self.seed = int(seed)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} samples")
        rng = np.random.default_rng([self.seed, int(i)])
        src = self.sources[int(rng.integers(len(self.sources)))]
        image, sigma = make_sample(src, rng, self.crop_px, self.recipe)
        return torch.from_numpy(image)[None], torch.from_numpy(sigma)[None]


# --------------------------------------------------------------------------- fixed test set


def make_test_set(
    heldout: list[F32], n: int, crop_px: int, recipe: SynthesisRecipe, seed: int
) -> dict[str, NDArray[Any]]:
    """n samples from held-out images (round robin over them), reproducible by seed.

    Keys: images, sigma_px (n x H x W float32), source_index, bit_depth (int),
    map_kind, psf (str), sigma_max_px (scalar), recipe_json (the recipe used).
    """
    if not heldout:
        raise ValueError("no held-out images to build a test set from")
    images = np.empty((n, crop_px, crop_px), dtype=np.float32)
    sigmas = np.empty_like(images)
    src_idx = np.empty(n, dtype=np.int32)
    bits = np.empty(n, dtype=np.int32)
    kinds: list[str] = []
    psfs: list[str] = []
    for k in range(n):
        rng = np.random.default_rng([seed, k])
        src_idx[k] = k % len(heldout)
        img, sig, info = make_sample_with_info(
            np.asarray(heldout[src_idx[k]], dtype=np.float32), rng, crop_px, recipe
        )
        images[k], sigmas[k], bits[k] = img, sig, info["bit_depth"]
        kinds.append(info["map_kind"])
        psfs.append(info["psf"])
    return {
        "images": images,
        "sigma_px": sigmas,
        "source_index": src_idx,
        "bit_depth": bits,
        "map_kind": np.asarray(kinds, dtype=str),
        "psf": np.asarray(psfs, dtype=str),
        "sigma_max_px": np.asarray(recipe.sigma_max_px, dtype=np.float32),
        "recipe_json": np.asarray(json.dumps(recipe.model_dump(mode="json"))),
    }


_REQUIRED_KEYS = ("images", "sigma_px")


def save_test_set(path: Path | str, data: dict[str, NDArray[Any]]) -> Path:
    """Write a test set as compressed .npz (no pickled objects)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with p.open("wb") as fh:
        np.savez_compressed(fh, **data)  # type: ignore[arg-type]
    return p


def load_test_set(path: Path | str) -> dict[str, NDArray[Any]]:
    """Read a test set written by `save_test_set`; ValueError with the reason if it is not one."""
    p = Path(path)
    try:
        with np.load(p, allow_pickle=False) as npz:
            data = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise
    except Exception as exc:
        raise ValueError(f"{p} is not a readable test set (.npz): {exc}") from None
    missing = [k for k in _REQUIRED_KEYS if k not in data]
    if missing:
        raise ValueError(f"{p} is not a test set: missing {', '.join(missing)}")
    if data["images"].shape != data["sigma_px"].shape or data["images"].ndim != 3:
        raise ValueError(f"{p}: images and sigma_px must both be N x H x W arrays of equal shape")
    return data
