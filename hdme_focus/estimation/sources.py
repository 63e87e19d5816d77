"""Source photos for synthesis, split into train and held-out BY IMAGE (never by crop).

Default: the photos bundled inside scikit-image's wheel (no download, same on
every machine, so the split is reproducible). The textures the simulator paints
its scenes with go to the held-out side, so simulator benchmarks measure
textures the model never trained on. A user folder: every readable image in it.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from numpy.typing import NDArray

from hdme_focus import records
from hdme_focus.core.frame import ImageInputError, to_gray_float
from hdme_focus.textures import SCENE_TEXTURES

F32 = NDArray[np.float32]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp")

# Photos shipped inside scikit-image (skimage/data/*.png|jpg), no pooch needed.
# Left out: cat (= chelsea), clock (motion blurred), colorwheel and logo (flat
# synthetic art), and everything fetched over the network.
SKIMAGE_SOURCES: tuple[str, ...] = (
    "astronaut",
    "brick",
    "camera",
    "cell",
    "chelsea",
    "coffee",
    "coins",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "microaneurysms",
    "moon",
    "page",
    "retina",
    "rocket",
    "stereo_motorcycle",
    "text",
)


# What the independent benchmark (benchmarks/accuracy.py) renders its photo and
# microscopy families from: held out of every training split, by name.
EVAL_PHOTOS: tuple[str, ...] = ("brick", "chelsea", "coffee", "grass", "gravel")
EVAL_MICROSCOPY: tuple[str, ...] = ("cell", "immunohistochemistry", "retina")


def _scene_textures() -> tuple[str, ...]:
    """Names always held out of training: the simulator's textures and the benchmark's photos."""
    return tuple(dict.fromkeys((*SCENE_TEXTURES, *EVAL_PHOTOS, *EVAL_MICROSCOPY)))


def _load_skimage(name: str) -> F32 | None:
    import skimage.data  # slow import, only when needed

    loader: Callable[[], Any] | None = getattr(skimage.data, name, None)
    if loader is None:
        return None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = loader()
    except Exception:  # needs pooch / network, or not in this skimage version
        return None
    if isinstance(img, tuple):  # stereo pairs: the left view
        img = img[0]
    return to_gray_float(np.asarray(img))


def read_image(path: Path) -> F32 | None:
    """Gray float32 in [0, 1], or None if the file is not a readable image."""
    try:
        pixels, bit_depth = records.read_image(path)
        return to_gray_float(pixels, bit_depth)
    except ImageInputError:
        return None


def _folder_images(folder: Path) -> list[tuple[str, F32]]:
    if not folder.is_dir():
        raise FileNotFoundError(str(folder))
    out: list[tuple[str, F32]] = []
    for p in sorted(folder.iterdir()):
        if p.suffix.lower() in IMAGE_SUFFIXES and (img := read_image(p)) is not None:
            out.append((p.name, img))
    if not out:
        raise ImageInputError(
            f"no readable images ({', '.join(IMAGE_SUFFIXES)}) in {folder}; "
            "put at least two photos there or leave the folder out to use the bundled ones"
        )
    return out


# The image-level split never follows a training seed: a run with another seed must
# not train on the images that `evaluate` and the model card hold out.
SPLIT_SEED = 0


def split_names(
    names: list[str], heldout_fraction: float, seed: int, forced_heldout: tuple[str, ...] = ()
) -> tuple[list[str], list[str]]:
    """Image-level split: forced names first, then a seeded draw up to the fraction."""
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    heldout = [n for n in names if n in forced_heldout]
    want = math.ceil(heldout_fraction * len(names)) if heldout_fraction > 0 else 0
    rest = [n for n in names if n not in heldout]
    need = max(0, want - len(heldout))
    if need:
        pick = np.random.default_rng(seed).permutation(len(rest))[:need]
        heldout += [rest[i] for i in sorted(pick)]
    train = [n for n in names if n not in heldout]
    if not train:
        raise ImageInputError(
            f"only {len(names)} source image(s): none left for training after holding "
            f"out {len(heldout)}; add images or use heldout_fraction=0"
        )
    return train, [n for n in names if n in heldout]


def load_named_sources(
    folder: Path | None = None, heldout_fraction: float = 0.25, seed: int = SPLIT_SEED
) -> tuple[dict[str, F32], dict[str, F32]]:
    """Like `load_source_images`, keyed by image name (for model cards and reports)."""
    if folder is None:
        loaded = [(n, img) for n in SKIMAGE_SOURCES if (img := _load_skimage(n)) is not None]
        forced = _scene_textures()
    else:
        loaded = _folder_images(Path(folder))
        forced = ()
    images = dict(loaded)
    train, heldout = split_names(list(images), heldout_fraction, seed, forced)
    return {n: images[n] for n in train}, {n: images[n] for n in heldout}


def load_source_images(
    folder: Path | None = None, heldout_fraction: float = 0.25, seed: int = SPLIT_SEED
) -> tuple[list[F32], list[F32]]:
    """(train, heldout) gray float32 images in [0, 1], split by image."""
    train, heldout = load_named_sources(folder, heldout_fraction, seed)
    return list(train.values()), list(heldout.values())


# --------------------------------------------------------------------------- procedural families
#
# Sharp radiance with the statistics of real scenes and an exactly known blur of
# (almost) zero: shapes are drawn on a grid SUPERSAMPLE times finer and area-averaged,
# so an edge is spread over well under half a pixel. Each takes the output size and
# a seeded generator and returns float32 in [0, 1].

SUPERSAMPLE = 4
ProceduralFamily = Literal["dead_leaves", "power_law", "lines_text", "fluorescence", "blank"]
PROCEDURAL_FAMILIES: tuple[ProceduralFamily, ...] = (
    "dead_leaves",
    "power_law",
    "lines_text",
    "fluorescence",
    "blank",
)


def area_downscale(image: F32, factor: int) -> F32:
    """Mean over factor x factor blocks (drops a ragged edge): no new blur, no aliasing of edges."""
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    blocks = np.asarray(image[:h, :w], dtype=np.float32).reshape(
        h // factor, factor, w // factor, factor
    )
    return np.asarray(blocks.mean(axis=(1, 3)), dtype=np.float32)


def _unit(img: NDArray[Any]) -> F32:
    lo, hi = float(img.min()), float(img.max())
    if hi <= lo:
        return np.full(img.shape, 0.5, dtype=np.float32)
    return ((img - lo) / (hi - lo)).astype(np.float32)


def dead_leaves(size_px: int, rng: np.random.Generator) -> F32:
    """Occluding discs and rectangles with radii ~ r^-3 (scale invariant, like natural scenes)."""
    n = size_px * SUPERSAMPLE
    # uncovered ground is itself a 1/f texture, so no flat patches are left between leaves
    ground = cv2.resize(power_law(size_px, rng), (n, n), interpolation=cv2.INTER_NEAREST)
    canvas = (rng.uniform(0, 1) + rng.uniform(0.1, 0.5) * (ground - 0.5)).astype(np.float32)
    r_min, r_max = 0.5 * SUPERSAMPLE, rng.uniform(0.1, 0.5) * n
    count = int(rng.integers(800, 2500))
    u = rng.uniform(0, 1, count)
    # inverse CDF of p(r) ~ r^-3 on [r_min, r_max]
    radii = 1.0 / np.sqrt(r_min**-2 - u * (r_min**-2 - r_max**-2))
    for r in radii:
        cx, cy = (int(v) for v in rng.integers(-int(r), n + int(r), size=2))
        g = float(rng.uniform(0, 1))
        if rng.random() < 0.6:
            cv2.circle(canvas, (cx, cy), max(1, round(r)), g, -1, lineType=cv2.LINE_8)
        else:
            box = (
                (cx, cy),
                (float(r * rng.uniform(1, 3)), float(r * rng.uniform(0.3, 2))),
                float(rng.uniform(0, 180)),
            )
            cv2.fillPoly(
                canvas, [cv2.boxPoints(box).round().astype(np.int32)], g, lineType=cv2.LINE_8
            )
    return _unit(area_downscale(canvas, SUPERSAMPLE))


def power_law(size_px: int, rng: np.random.Generator) -> F32:
    """1/f^a noise (a in [0.8, 1.6]); sometimes thresholded into sharp-edged regions.

    Built at the output resolution: its spectrum is flat up to Nyquist in slope, so
    its sharpness is that of an ideal sampled scene (no extra blur).
    """
    a = rng.uniform(0.8, 1.6)
    fy = np.fft.fftfreq(size_px)[:, None]
    fx = np.fft.rfftfreq(size_px)[None, :]
    f = np.sqrt(fx * fx + fy * fy)
    f[0, 0] = 1.0
    spec = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)) / f**a
    spec[0, 0] = 0
    field = np.fft.irfft2(spec, s=(size_px, size_px))
    if rng.random() < 0.3:  # level sets of 1/f noise: sharp, scale-invariant boundaries
        levels = np.quantile(field, np.sort(rng.uniform(0, 1, int(rng.integers(1, 4)))))
        field = np.digitize(field, levels).astype(np.float64) + 0.2 * field / field.std()
    return _unit(field)


_FONTS = (
    cv2.FONT_HERSHEY_SIMPLEX,
    cv2.FONT_HERSHEY_DUPLEX,
    cv2.FONT_HERSHEY_COMPLEX,
    cv2.FONT_HERSHEY_TRIPLEX,
    cv2.FONT_HERSHEY_PLAIN,
)
_GLYPHS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789 .,-+/"


def lines_text(size_px: int, rng: np.random.Generator) -> F32:
    """Printed text, thin lines and bars (documents, PCB traces, resolution targets)."""
    n = size_px * SUPERSAMPLE
    bg, fg = rng.uniform(0, 1, size=2)
    canvas = np.full((n, n), bg, dtype=np.float32)
    for _ in range(int(rng.integers(3, 25))):
        p0 = tuple(int(v) for v in rng.integers(0, n, 2))
        g = float(fg if rng.random() < 0.7 else rng.uniform(0, 1))
        if rng.random() < 0.5:
            text = "".join(rng.choice(list(_GLYPHS), size=int(rng.integers(3, 20))))
            scale = rng.uniform(0.25, 1.2) * SUPERSAMPLE
            font = _FONTS[int(rng.integers(len(_FONTS)))]
            thick = max(1, round(rng.uniform(0.5, 2.5) * SUPERSAMPLE * scale / SUPERSAMPLE / 1.5))
            mask = np.zeros((n, n), dtype=np.uint8)  # putText draws on 8-bit images only
            cv2.putText(mask, text, p0, font, scale, 255, thick, lineType=cv2.LINE_8)
            canvas[mask > 0] = g
        else:
            p1 = tuple(int(v) for v in rng.integers(0, n, 2))
            cv2.line(
                canvas, p0, p1, g, max(1, round(rng.uniform(0.3, 4) * SUPERSAMPLE)), cv2.LINE_8
            )
    return _unit(area_downscale(canvas, SUPERSAMPLE))


def fluorescence(size_px: int, rng: np.random.Generator) -> F32:
    """Sparse bright structure on a dark background: points, filaments, sharp-edged blobs."""
    n = size_px * SUPERSAMPLE
    canvas = np.zeros((n, n), dtype=np.float32)
    for _ in range(int(rng.integers(0, 12))):  # blobs (vesicles, nuclei with sharp rims)
        c = tuple(int(v) for v in rng.integers(0, n, 2))
        axes = tuple(int(v) for v in rng.uniform(1, 12, 2) * SUPERSAMPLE)
        cv2.ellipse(
            canvas, c, axes, float(rng.uniform(0, 180)), 0, 360, float(rng.uniform(0.2, 1)), -1
        )
    for _ in range(int(rng.integers(0, 15))):  # filaments: smooth random walks, ~1 px wide
        pts = [rng.uniform(0, n, 2)]
        ang = rng.uniform(0, 2 * np.pi)
        for _ in range(int(rng.integers(5, 40))):
            ang += rng.normal(0, 0.3)
            pts.append(pts[-1] + 3 * SUPERSAMPLE * np.array([np.cos(ang), np.sin(ang)]))
        poly = np.round(np.array(pts)).astype(np.int32)
        width = max(1, round(rng.uniform(0.3, 1.5) * SUPERSAMPLE))
        cv2.polylines(canvas, [poly], False, float(rng.uniform(0.2, 1)), width, cv2.LINE_8)
    k = int(rng.integers(5, 200))  # points: sub-pixel emitters
    ys, xs = rng.integers(0, n, k), rng.integers(0, n, k)
    np.add.at(canvas, (ys, xs), rng.uniform(1, 4, k).astype(np.float32) * SUPERSAMPLE**2)
    img = area_downscale(canvas, SUPERSAMPLE)
    top = max(float(np.quantile(img, 0.999)), 0.25 * float(img.max()), 1e-6)
    out: F32 = np.clip(img / top, 0.0, 1.0).astype(np.float32)
    return out


def blank(size_px: int, rng: np.random.Generator) -> F32:
    """A featureless field: uneven illumination only (a tilt and a vignette, no edges).

    Its blur cannot be read, so whatever sigma map it is rendered with is a target
    the network cannot predict: it teaches the error-scale head to report a large
    error there (an empty slide, bare wafer, a lens cap), not a confident guess.
    (Layered sigma maps composite several such fields: their occlusion borders are
    faint edges, whose blur is readable, as a bare wafer's edge is.)
    """
    t = np.linspace(-1.0, 1.0, size_px, dtype=np.float64)
    yy, xx = np.meshgrid(t, t, indexing="ij")
    gx, gy, vig = rng.normal(0, 1), rng.normal(0, 1), rng.uniform(-1, 1)
    return _unit(gx * xx + gy * yy + vig * (xx * xx + yy * yy) + 1e-3 * xx)


# Families whose contrast span is scaled down further (they carry no structure to show)
FEATURELESS_FAMILIES: tuple[ProceduralFamily, ...] = ("blank",)

PROCEDURAL: dict[ProceduralFamily, Callable[[int, np.random.Generator], F32]] = {
    "dead_leaves": dead_leaves,
    "power_law": power_law,
    "lines_text": lines_text,
    "fluorescence": fluorescence,
    "blank": blank,
}
