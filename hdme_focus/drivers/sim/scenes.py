"""Scenes the simulated camera looks at: layers of texture at known distances.

A scene is a stack of layers, far to near, each with radiance, coverage (alpha)
and object distance u_scene (mm) per pixel. The camera blurs every layer by its
own thin-lens sigma and composites them, so depth edges occlude honestly and the
ground truth (visible distance, hence sigma and in-focus position) is exact.

Where things are, and where they focus with the default optics (f = 50 mm, F/8,
5 um pitch, s0 = 51 mm, image side, V-curve slope k ~ 8.4 px/mm):

    letters   background 1300 mm (1.00 mm), "M" 1150 (1.27), "D" 1000 (1.63), "H" 900 (1.94)
    tilted    one plane, 900 mm at the left edge (1.94) to 1300 mm at the right (1.00)
    slide     a thin generated cell sample, 1050 mm with a ~1% tilt (1.50 +- 0.03 mm)
    image     your texture (scene.image) and depth map (scene.depth, mm, TIFF or .npy)

Over the default soft limits (0..3 mm) the blur stays mostly within 0..10 px
(up to ~17 px at the far ends of the range).

Image setup (`optics.setup = "image"`): the distances above are physical and
fixed; change the optics and the focus positions move, as on a real bench.

Object setup (`"object"`, the stage moves the sample, u = u_scene + z): built-in
scenes are mounted at the lens's working distance with their relief scaled so
that each element focuses at the same stage position as in the table above. The
setup that makes sense for it is a 1:1 macro bench, e.g.

    [optics]
    focal_length_mm = 50.0
    f_number = 5.6
    sensor_distance_mm = 100.0   # working distance 100 mm, 5 um of sample per pixel
    setup = "object"
    [scene]
    name = "slide"               # focuses at 1.5 mm, k ~ 6.3 px/mm

With the default s0 = 51 mm the working distance is 2.55 m and the blur barely
changes over a few mm of sample travel (k ~ 0.004 px/mm): physically right, and
useless for focusing.

Textures come from scikit-image's bundled images (never downloaded) or are
generated. The images used are listed in `hdme_focus.textures.SCENE_TEXTURES`; the estimation team
holds them out of training so benchmarks on the simulator are not train-on-test.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import skimage.data
import tifffile
from numpy.typing import NDArray

from hdme_focus.config import ConfigError, SceneConfig
from hdme_focus.core.frame import ImageInputError
from hdme_focus.optics import ThinLens, object_distance_mm
from hdme_focus.records import read_image

F32 = NDArray[np.float32]
ROI = tuple[int, int, int, int]


# The lens the built-in scenes were designed for; in the object setup it maps
# each element's distance to the stage position where it should focus.
REFERENCE_LENS = ThinLens(50.0, 8.0, 5.0, 51.0, "image")

LETTER_DISTANCES_MM: dict[str, float] = {"H": 900.0, "D": 1000.0, "M": 1150.0}
BACKGROUND_DISTANCE_MM = 1300.0
TILTED_RANGE_MM = (900.0, 1300.0)
SLIDE_DISTANCE_MM = 1050.0
SLIDE_TILT_MM = (24.0, 10.0)  # distance change across the full width, height


@dataclass(frozen=True)
class SceneLayer:
    """One layer: radiance in [0, 1], coverage alpha, object distance u_scene (mm); all HxW."""

    radiance: F32
    alpha: F32
    distance_mm: F32


@dataclass(frozen=True)
class Scene:
    """Layers far -> near, and named regions of interest (x, y, w, h) with known depth."""

    name: str
    layers: list[SceneLayer]
    regions: dict[str, ROI]

    @property
    def shape(self) -> tuple[int, int]:
        h, w = self.layers[0].radiance.shape[:2]
        return int(h), int(w)

    def visible_distance_mm(self, threshold: float = 0.5) -> F32:
        """Distance of the nearest surface over each pixel (the rule of render.visible_sigma)."""
        dist = np.array(self.layers[0].distance_mm, dtype=np.float32, copy=True)
        for layer in self.layers[1:]:
            sel = layer.alpha >= threshold
            dist[sel] = layer.distance_mm[sel]
        return dist


def build_scene(cfg: SceneConfig, width_px: int, height_px: int, lens: ThinLens) -> Scene:
    """Build the configured scene at the camera's resolution."""
    builders: dict[str, Callable[[SceneConfig, int, int, ThinLens], Scene]] = {
        "letters": _letters,
        "tilted": _tilted,
        "slide": _slide,
        "image": _image,
    }
    if cfg.name not in builders:
        raise ConfigError(
            f"scene.name = {cfg.name!r}: unknown scene; use one of {sorted(builders)}"
        )
    return builders[cfg.name](cfg, int(width_px), int(height_px), lens)


# --------------------------------------------------------------------------- placement


def _place(distance_mm: NDArray[np.float64] | float, lens: ThinLens) -> F32:
    """Object distance u_scene for the lens's setup (see the module note)."""
    d = np.asarray(distance_mm, dtype=np.float64)
    if lens.setup == "image":
        return d.astype(np.float32)
    working_mm = float(object_distance_mm(lens.focal_length_mm, lens.sensor_distance_mm))
    if not math.isfinite(working_mm) or working_mm <= 0:
        raise ConfigError(
            f"optics.sensor_distance_mm = {lens.sensor_distance_mm}: no real image in the object "
            "setup; it must exceed focal_length_mm"
        )
    return (working_mm - REFERENCE_LENS.focus_position_mm(d)).astype(np.float32)


def _plane(value: float, width: int, height: int) -> F32:
    return np.full((height, width), value, dtype=np.float32)


def _frozen(layer: SceneLayer) -> SceneLayer:
    """Make the arrays read-only: cameras cache scenes and must not see them change."""
    for arr in (layer.radiance, layer.alpha, layer.distance_mm):
        arr.setflags(write=False)
    return layer


def _margin(width: int, height: int) -> int:
    return max(2, round(0.02 * min(width, height)))


# --------------------------------------------------------------------------- textures


@functools.lru_cache(maxsize=8)
def _skimage_gray(name: str) -> F32:
    # the bundled PNG read directly: skimage.io would import scipy (~0.3 s of every start)
    png = Path(skimage.data.__file__).parent / f"{name}.png"
    raw = cv2.imread(str(png), cv2.IMREAD_UNCHANGED) if png.is_file() else None
    if raw is not None and raw.dtype == np.uint8:
        codes = {3: cv2.COLOR_BGR2RGB, 4: cv2.COLOR_BGRA2RGB}
        img = cv2.cvtColor(raw, codes[raw.shape[2]]) if raw.ndim == 3 else raw
    else:
        img = np.asarray(getattr(skimage.data, name)())
    if img.ndim == 3:
        img = cv2.cvtColor(img[..., :3], cv2.COLOR_RGB2GRAY)
    out = img.astype(np.float32) / 255.0
    out.setflags(write=False)
    return out


def _stretch(img: F32, lo: float, hi: float) -> F32:
    p_lo, p_hi = np.percentile(img, [0.5, 99.5])
    scaled = (img - p_lo) / max(float(p_hi - p_lo), 1e-6)
    return np.asarray(lo + (hi - lo) * np.clip(scaled, 0.0, 1.0), dtype=np.float32)


def texture(
    name: str,
    width: int,
    height: int,
    rng: np.random.Generator,
    lo: float = 0.05,
    hi: float = 0.95,
    zoom: float = 1.0,
) -> F32:
    """A width x height crop of a skimage texture (mirror-tiled if needed), contrast in [lo, hi].

    zoom <= 1 only: upsampling would add blur that the ground truth does not know about.
    """
    if not 0 < zoom <= 1:
        raise ValueError(f"texture zoom must be in (0, 1], got {zoom}")
    img = _skimage_gray(name)
    if zoom < 1:
        img = np.asarray(
            cv2.resize(img, None, fx=zoom, fy=zoom, interpolation=cv2.INTER_AREA), np.float32
        )
    if rng.random() < 0.5:
        img = img[:, ::-1]
    if rng.random() < 0.5:
        img = img[::-1, :]
    th, tw = img.shape
    if th < height or tw < width:
        img = np.pad(img, ((0, max(0, height - th)), (0, max(0, width - tw))), mode="symmetric")
    y0 = int(rng.integers(0, img.shape[0] - height + 1))
    x0 = int(rng.integers(0, img.shape[1] - width + 1))
    return _stretch(img[y0 : y0 + height, x0 : x0 + width], lo, hi)


def _smooth_noise(rng: np.random.Generator, width: int, height: int, sigma_px: float) -> F32:
    noise = rng.standard_normal((height, width)).astype(np.float32)
    return np.asarray(cv2.GaussianBlur(noise, (0, 0), sigma_px), dtype=np.float32)


def cell_texture(width: int, height: int, rng: np.random.Generator) -> F32:
    """Brightfield-like stained cells: absorbing cytoplasm and darker nuclei, fine granules."""
    cyto = np.zeros((height, width), np.uint8)
    nuclei = np.zeros((height, width), np.uint8)
    n_cells = max(4, int(width * height / 700))
    for _ in range(n_cells):
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        ax = (int(rng.integers(6, 16)), int(rng.integers(5, 13)))
        angle = float(rng.uniform(0, 180))
        shade = int(rng.integers(110, 256))
        cv2.ellipse(cyto, (cx, cy), ax, angle, 0, 360, shade, -1, cv2.LINE_AA)
        nax = (max(2, int(ax[0] * 0.45)), max(2, int(ax[1] * 0.45)))
        ncx = cx + int(rng.integers(-2, 3))
        ncy = cy + int(rng.integers(-2, 3))
        cv2.ellipse(nuclei, (ncx, ncy), nax, angle, 0, 360, 255, -1, cv2.LINE_AA)
    grain = _smooth_noise(rng, width, height, 0.8)
    grain /= max(float(grain.std()), 1e-6)
    stain = _smooth_noise(rng, width, height, 12.0)
    stain /= max(float(stain.std()), 1e-6)
    absorb = (cyto.astype(np.float32) / 255.0) * 0.7 * (1.0 + 0.35 * grain)
    absorb += (nuclei.astype(np.float32) / 255.0) * 1.1 * (1.0 + 0.25 * grain)
    background = 0.9 + 0.03 * stain + 0.015 * grain
    out = np.clip(background * np.exp(-np.clip(absorb, 0.0, None)), 0.0, 1.0)
    return np.asarray(out, dtype=np.float32)


# --------------------------------------------------------------------------- regions


def _strips(width: int, height: int, frac_w: float) -> dict[str, ROI]:
    w = max(4, round(width * frac_w))
    h = max(4, height // 2)
    y = (height - h) // 2
    return {
        name: (min(max(0, round(cx * width - w / 2)), width - w), y, w, h)
        for name, cx in (("left", 1 / 6), ("center", 1 / 2), ("right", 5 / 6))
    }


# --------------------------------------------------------------------------- scenes

STROKE = 0.3  # letter stroke width as a fraction of the letter's width


def letter_mask(letter: str, box_w: int, box_h: int, supersample: int = 4) -> F32:
    """Anti-aliased mask of a thick block letter ("H", "D" or "M") filling box_w x box_h.

    Each letter has a full-height left stem STROKE * box_w wide, where its region sits.
    """
    q = supersample
    w, h = box_w * q, box_h * q
    t = max(q, round(STROKE * w))
    canvas = np.zeros((h, w), np.uint8)
    cv2.rectangle(canvas, (0, 0), (t - 1, h - 1), 255, -1)  # left stem
    if letter == "H":
        cv2.rectangle(canvas, (w - t, 0), (w - 1, h - 1), 255, -1)
        cv2.rectangle(canvas, (0, (h - t) // 2), (w - 1, (h + t) // 2), 255, -1)
    elif letter == "D":
        rx = min(w // 2, h // 2)
        cx = w - 1 - rx
        cv2.rectangle(canvas, (0, 0), (cx, h - 1), 255, -1)
        cv2.ellipse(canvas, (cx, h // 2), (rx, h // 2), 0, -90, 90, 255, -1)
        cv2.rectangle(canvas, (t, t), (cx, h - 1 - t), 0, -1)
        inner = (max(1, rx - t), max(1, h // 2 - t))
        cv2.ellipse(canvas, (cx, h // 2), inner, 0, -90, 90, 0, -1)
    elif letter == "M":
        cv2.rectangle(canvas, (w - t, 0), (w - 1, h - 1), 255, -1)
        tip = (w // 2, round(0.62 * h))
        half = round(0.5 * t)
        for x_top in (half, w - 1 - half):
            cv2.line(canvas, (x_top, half), tip, 255, t)
    else:
        raise ValueError(f"no block letter for {letter!r}; use H, D or M")
    small = cv2.resize(
        canvas.astype(np.float32) / 255.0, (box_w, box_h), interpolation=cv2.INTER_AREA
    )
    return np.clip(small, 0.0, 1.0)


def _letters(cfg: SceneConfig, width: int, height: int, lens: ThinLens) -> Scene:
    rng = np.random.default_rng(cfg.seed)
    background = SceneLayer(
        texture("coffee", width, height, rng, 0.05, 0.7),
        _plane(1.0, width, height),
        _place(BACKGROUND_DISTANCE_MM, lens) * np.ones((height, width), np.float32),
    )
    layers = [_frozen(background)]
    regions: dict[str, ROI] = {}
    margin = _margin(width, height)
    cell_w = width / 3
    box_w, box_h = round(0.85 * cell_w), round(0.62 * height)
    y0 = round(0.58 * height - box_h / 2)
    stem_w = round(STROKE * box_w)
    inset = max(0, min(margin, (stem_w - 1) // 2))
    letter_tex = {"H": ("gravel", 1.0), "D": ("grass", 1.0), "M": ("brick", 0.5)}
    # far -> near: M (1150 mm), D (1000 mm), H (900 mm); H, D, M read left to right
    for idx, letter in sorted(
        enumerate(LETTER_DISTANCES_MM), key=lambda it: -LETTER_DISTANCES_MM[it[1]]
    ):
        mask = letter_mask(letter, box_w, box_h)
        alpha = np.zeros((height, width), np.float32)
        x0 = round((idx + 0.5) * cell_w - box_w / 2)
        alpha[y0 : y0 + box_h, x0 : x0 + box_w] = mask
        dist = _place(LETTER_DISTANCES_MM[letter], lens) * np.ones((height, width), np.float32)
        tex_name, zoom = letter_tex[letter]
        radiance = texture(tex_name, width, height, rng, 0.3, 0.95, zoom)
        layers.append(_frozen(SceneLayer(radiance, alpha, dist)))
        regions[letter] = (x0 + inset, y0 + inset, stem_w - 2 * inset, box_h - 2 * inset)
    regions["background"] = (margin, margin, width - 2 * margin, max(1, y0 - 2 * margin))
    ordered = {k: regions[k] for k in (*LETTER_DISTANCES_MM, "background")}
    return Scene("letters", layers, ordered)


def _tilted(cfg: SceneConfig, width: int, height: int, lens: ThinLens) -> Scene:
    rng = np.random.default_rng(cfg.seed)
    near, far = TILTED_RANGE_MM
    x = (np.arange(width, dtype=np.float64) + 0.5) / width
    dist = np.broadcast_to(_place(near + (far - near) * x, lens), (height, width))
    layer = SceneLayer(
        texture("gravel", width, height, rng),
        _plane(1.0, width, height),
        np.ascontiguousarray(dist, dtype=np.float32),
    )
    return Scene("tilted", [_frozen(layer)], _strips(width, height, 0.04))


def _slide(cfg: SceneConfig, width: int, height: int, lens: ThinLens) -> Scene:
    rng = np.random.default_rng(cfg.seed)
    tilt_x, tilt_y = SLIDE_TILT_MM
    xx = (np.arange(width, dtype=np.float64)[None, :] + 0.5) / width - 0.5
    yy = (np.arange(height, dtype=np.float64)[:, None] + 0.5) / height - 0.5
    dist = _place(SLIDE_DISTANCE_MM + tilt_x * xx + tilt_y * yy, lens)
    layer = SceneLayer(cell_texture(width, height, rng), _plane(1.0, width, height), dist)
    return Scene("slide", [_frozen(layer)], _strips(width, height, 1 / 6))


# --------------------------------------------------------------------------- user image


def _read_texture(path: Path) -> F32:
    if not path.is_file():
        raise ConfigError(f"scene.image = '{path}': file not found")
    try:
        img, _ = read_image(path)
    except ImageInputError as exc:
        raise ConfigError(f"scene.image = '{path}': cannot read it as an image ({exc})") from None
    if img.size == 0 or img.ndim not in (2, 3):
        raise ConfigError(f"scene.image = '{path}': cannot read it as an image (PNG, JPEG or TIFF)")
    out = np.nan_to_num(img.astype(np.float32))
    if out.ndim == 3:
        out = out[..., : min(3, out.shape[2])].mean(axis=2)
    out = out - min(float(out.min()), 0.0)
    top = float(out.max())
    # relative radiance: brightest pixel white (a 12-bit image in a 16-bit file is not dark)
    out = out / top if top > 0 else out
    return np.clip(np.nan_to_num(out), 0.0, 1.0).astype(np.float32)


def _read_depth(path: Path, lens: ThinLens) -> NDArray[np.float64]:
    if not path.is_file():
        raise ConfigError(f"scene.depth = '{path}': file not found")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            depth = np.load(path, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            depth = tifffile.imread(path)
        else:
            raise ConfigError(
                f"scene.depth = '{path}': unsupported format {suffix!r}; "
                "use a .tif/.tiff or .npy array of distances in mm"
            )
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(f"scene.depth = '{path}': cannot read the depth map ({exc})") from exc
    depth = np.squeeze(np.asarray(depth))
    if depth.ndim != 2 or not np.issubdtype(depth.dtype, np.number):
        raise ConfigError(
            f"scene.depth = '{path}': expected a 2-D numeric array, got shape {depth.shape}"
        )
    depth = depth.astype(np.float64)
    if not np.all(np.isfinite(depth)):
        raise ConfigError(f"scene.depth = '{path}': contains NaN or infinite values")
    lowest = lens.focal_length_mm if lens.setup == "image" else 0.0
    if float(depth.min()) <= lowest:
        raise ConfigError(
            f"scene.depth = '{path}': minimum {float(depth.min()):.4g} mm; object distances must "
            f"exceed {lowest:g} mm (is the map in metres rather than mm?)"
        )
    return depth


def _image(cfg: SceneConfig, width: int, height: int, lens: ThinLens) -> Scene:
    if cfg.image is None or cfg.depth is None:
        raise ConfigError(
            "scene.name = 'image' needs scene.image (texture file) and scene.depth "
            "(distances in mm, .tif/.tiff/.npy)"
        )
    tex = _read_texture(Path(cfg.image))
    depth = _read_depth(Path(cfg.depth), lens)
    shrink = tex.shape[1] > width or tex.shape[0] > height
    tex = np.asarray(
        cv2.resize(
            tex, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
        ),
        np.float32,
    )
    # nearest keeps depth edges: interpolation would invent surfaces between two objects
    depth = np.asarray(
        cv2.resize(depth, (width, height), interpolation=cv2.INTER_NEAREST), np.float64
    )
    layers = depth_slices(np.clip(tex, 0.0, 1.0).astype(np.float32), depth, lens)
    m = _margin(width, height)
    regions: dict[str, ROI] = {
        "center": (width // 3, height // 3, max(1, width // 3), max(1, height // 3)),
        "full": (m, m, width - 2 * m, height - 2 * m),
    }
    return Scene("image", layers, regions)


def depth_slices(
    radiance: F32, depth_mm: NDArray[np.float64], lens: ThinLens, max_sigma_step_px: float = 2.0
) -> list[SceneLayer]:
    """Split a texture + depth map into layers so depth edges occlude when blurred.

    Slices are uniform in 1/u (blur is linear in 1/u), about max_sigma_step_px of
    blur apart. Each slice's layer also extends, at its near edge distance, under
    every nearer slice, so a continuous surface has no gap where slices meet.
    """
    inv = 1.0 / depth_mm
    pitch_mm = lens.pixel_pitch_um * 1e-3
    spread_px = (
        float(inv.max() - inv.min())
        * lens.focal_length_mm
        * lens.sensor_distance_mm
        / (2.0 * lens.f_number * math.sqrt(2.0) * pitch_mm)
    )
    n = int(np.clip(math.ceil(spread_px / max_sigma_step_px), 1, 8))
    shared = np.array(radiance, dtype=np.float32, copy=True)
    edges = np.linspace(float(inv.min()), float(inv.max()), n + 1)
    layers = []
    for i in range(n):
        lo, hi = edges[i], edges[i + 1]
        alpha = (inv >= lo) if i > 0 else np.ones_like(inv, dtype=bool)
        dist = 1.0 / np.clip(inv, lo, hi)
        layers.append(
            _frozen(SceneLayer(shared, alpha.astype(np.float32), dist.astype(np.float32)))
        )
    return layers
