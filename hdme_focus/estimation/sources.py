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
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

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


def _scene_textures() -> tuple[str, ...]:
    """Texture names the simulator's scenes use; always held out of training."""
    return SCENE_TEXTURES


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
    raw = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH | cv2.IMREAD_ANYCOLOR)
    if raw is None:
        return None
    if raw.ndim == 3:
        raw = cv2.cvtColor(raw, cv2.COLOR_BGRA2RGB if raw.shape[2] == 4 else cv2.COLOR_BGR2RGB)
    try:
        return to_gray_float(raw)
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
