"""Synthetic training data: shuffling, sigma maps, rendered blur, determinism, sources."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
import skimage.data
from numpy.typing import NDArray
from pydantic import ValidationError
from scipy import ndimage

from hdme_focus.core.frame import ImageInputError
from hdme_focus.estimation.sources import load_named_sources, load_source_images, split_names
from hdme_focus.estimation.synthesis import (
    MapWeights,
    SynthesisRecipe,
    SyntheticDefocusDataset,
    load_test_set,
    make_sample,
    make_sample_with_info,
    make_test_set,
    save_test_set,
    shuffle_pixels,
    sigma_map_layered,
    sigma_map_rectangles,
    sigma_map_smooth,
)

F32 = NDArray[np.float32]
CAMERA: F32 = skimage.data.camera().astype(np.float32) / 255.0  # type: ignore[no-untyped-call]
# Noise off, 16 bit: the rendered image is the blur alone.
CLEAN: dict[str, Any] = {
    "full_well_e": (1e12, 1e12),
    "read_noise_e": (0.0, 0.0),
    "salt_and_pepper_prob": 0.0,
    "bit_depths": (16,),
}


def only(kind: str, **kw: object) -> SynthesisRecipe:
    weights = {k: float(k == kind) for k in ("rectangles", "smooth", "layered", "constant")}
    return SynthesisRecipe(map_weights=MapWeights(**weights), **kw)


def neighbour_corr(img: F32) -> float:
    a = img[:, :-1].ravel().astype(np.float64)
    b = img[:, 1:].ravel().astype(np.float64)
    return float(np.corrcoef(a, b)[0, 1])


def lag_sigma(img: F32, lag: int) -> float:
    """Blur of a blurred white texture from its autocorrelation: rho(d) = exp(-d^2 / 4 sigma^2)."""
    var = float(img.var())
    dx = img[:, lag:] - img[:, :-lag]
    dy = img[lag:, :] - img[:-lag, :]
    rho = 1.0 - (float((dx * dx).mean()) + float((dy * dy).mean())) / (4.0 * var)
    return lag / float(np.sqrt(-4.0 * np.log(rho)))


# --------------------------------------------------------------------------- shuffling


# Separable shuffling keeps each pixel's row and column company, so row/column
# brightness trends survive: measured 0.17 on this crop (0.92 before, ~0 full).
@pytest.mark.parametrize(("mode", "max_corr"), [("full", 0.05), ("separable", 0.25)])
def test_shuffle_keeps_histogram_exactly_and_destroys_correlation(
    mode: str, max_corr: float
) -> None:
    crop = CAMERA[100:228, 100:228]
    out = shuffle_pixels(crop, np.random.default_rng(0), mode)  # type: ignore[arg-type]
    assert out.shape == crop.shape and out.dtype == crop.dtype
    np.testing.assert_array_equal(np.sort(out.ravel()), np.sort(crop.ravel()))
    assert neighbour_corr(crop) > 0.9
    assert abs(neighbour_corr(out)) < max_corr
    assert abs(neighbour_corr(out.T)) < max_corr


def test_shuffle_rejects_unknown_mode() -> None:
    with pytest.raises(ValueError, match="shuffle mode"):
        shuffle_pixels(CAMERA, np.random.default_rng(0), "diagonal")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- sigma maps


def test_rectangle_map_has_16_continuous_levels_in_range() -> None:
    for seed in range(5):
        m = sigma_map_rectangles(96, 80, np.random.default_rng(seed), sigma_max_px=7.0)
        assert m.shape == (96, 80) and m.dtype == np.float32
        assert m.min() >= 0.0 and m.max() <= 7.0
        levels = np.unique(m)
        assert levels.size == 16
        assert not np.allclose(levels, np.round(levels * 4) / 4)  # not on a ladder


def test_smooth_map_is_continuous_and_in_range() -> None:
    for seed in range(5):
        m = sigma_map_smooth(128, 128, np.random.default_rng(seed), sigma_max_px=10.0)
        assert m.min() >= 0.0 and m.max() <= 10.0
        assert m.max() - m.min() >= 0.99  # at least a tenth of the range
        assert np.unique(m).size > 1000
        step = max(np.abs(np.diff(m, axis=0)).max(), np.abs(np.diff(m, axis=1)).max())
        assert step < 0.5  # px per pixel: no jumps


def test_layered_map_shows_the_nearest_covering_layer() -> None:
    for seed in range(5):
        visible, layers = sigma_map_layered(64, 64, np.random.default_rng(seed), 10.0)
        assert 2 <= len(layers) <= 4
        assert np.all(layers[0].alpha == 1.0)
        assert visible.min() >= 0.0 and visible.max() <= 10.0
        expect = layers[0].sigma_px.copy()
        for layer in layers[1:]:
            expect = np.where(layer.alpha >= 0.5, layer.sigma_px, expect)
        np.testing.assert_array_equal(visible, expect)
        front = layers[-1].alpha >= 0.5
        np.testing.assert_array_equal(visible[front], layers[-1].sigma_px[front])


# --------------------------------------------------------------------------- rendered samples


@pytest.mark.parametrize("seed", [0, 2, 5])
def test_constant_blur_sample_has_the_labelled_sigma(seed: int) -> None:
    """Measured 3-5% low for sigma 1.5-9 px at 192 px; tolerance 12%."""
    img, sig, info = make_sample_with_info(
        CAMERA, np.random.default_rng(seed), 192, only("constant", **CLEAN)
    )
    s = float(sig[0, 0])
    assert np.all(sig == s) and info["map_kind"] == "constant"
    if s < 1.0:
        pytest.skip("autocorrelation estimate is unreliable below 1 px")
    assert lag_sigma(img, max(1, round(s))) == pytest.approx(s, rel=0.12)


def test_rectangle_sample_blur_follows_the_map() -> None:
    """Each rectangle's interior blur, measured from the texture, tracks its label."""
    recipe = only("rectangles", sigma_max_px=4.0, **CLEAN)
    want, got = [], []
    for seed in range(2):
        img, sig = make_sample(CAMERA, np.random.default_rng(seed), 256, recipe)
        for v in np.unique(sig):
            inner = ndimage.binary_erosion(sig == v, iterations=12)
            if inner.sum() < 400 or v < 0.8:
                continue
            ys, xs = np.nonzero(inner)
            sub = img[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
            want.append(float(v))
            got.append(lag_sigma(sub, max(1, round(float(v)))))
    assert len(want) >= 8
    rel = np.abs(np.array(got) - want) / np.array(want)
    assert np.median(rel) < 0.12
    assert np.corrcoef(want, got)[0, 1] > 0.9


def test_sample_is_quantised_in_range_and_labelled() -> None:
    recipe = SynthesisRecipe(bit_depths=(8,))
    for seed in range(6):
        img, sig = make_sample(CAMERA, np.random.default_rng(seed), 48, recipe)
        assert img.shape == sig.shape == (48, 48)
        assert img.dtype == sig.dtype == np.float32
        assert img.min() >= 0.0 and img.max() <= 1.0
        np.testing.assert_allclose(img * 255, np.round(img * 255), atol=1e-3)
        assert sig.min() >= 0.0 and sig.max() <= 10.0


def test_small_source_is_padded_not_refused() -> None:
    tiny = CAMERA[:20, :30]
    img, sig = make_sample(tiny, np.random.default_rng(0), 64, SynthesisRecipe())
    assert img.shape == sig.shape == (64, 64)


def test_layered_sample_and_disk_psf_render() -> None:
    img, sig, info = make_sample_with_info(
        CAMERA, np.random.default_rng(1), 64, only("layered", psf="disk")
    )
    assert info["map_kind"] == "layered" and info["psf"] == "disk"
    assert np.isfinite(img).all() and img.shape == sig.shape


def test_natural_crops_keep_structure() -> None:
    natural = SynthesisRecipe(shuffle_fraction=0.0, **CLEAN)
    img, _, info = make_sample_with_info(CAMERA, np.random.default_rng(3), 96, natural)
    assert not info["shuffled"]
    assert neighbour_corr(img) > 0.5


def test_recipe_rejects_bad_ranges() -> None:
    with pytest.raises(ValidationError):
        SynthesisRecipe(read_noise_e=(5.0, 1.0))
    with pytest.raises(ValidationError):
        SynthesisRecipe(bit_depths=(8, 32))
    with pytest.raises(ValidationError):
        SynthesisRecipe(map_weights=MapWeights(rectangles=0, smooth=0, layered=0, constant=0))
    with pytest.raises(ValidationError):
        SynthesisRecipe(sigma_max_px=0)


# --------------------------------------------------------------------------- dataset


def test_dataset_is_deterministic_by_seed_and_index() -> None:
    sources = [CAMERA, CAMERA[::-1].copy()]
    a = SyntheticDefocusDataset(sources, 10, 32, SynthesisRecipe(), seed=7)
    b = SyntheticDefocusDataset(sources, 10, 32, SynthesisRecipe(), seed=7)
    c = SyntheticDefocusDataset(sources, 10, 32, SynthesisRecipe(), seed=8)
    x, y = a[3]
    assert x.shape == y.shape == (1, 32, 32)
    assert str(x.dtype) == "torch.float32"
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    for i in (0, 3, 9):  # any order, any instance: same sample
        assert bool((a[i][0] == b[i][0]).all()) and bool((a[i][1] == b[i][1]).all())
    assert not bool((a[3][0] == c[3][0]).all())
    assert not bool((a[3][0] == a[4][0]).all())
    assert len(a) == 10
    with pytest.raises(IndexError):
        a[10]


def test_dataset_needs_sources() -> None:
    with pytest.raises(ValueError, match="no source"):
        SyntheticDefocusDataset([], 1, 32, SynthesisRecipe(), 0)


# --------------------------------------------------------------------------- test sets


def test_test_set_round_trips_and_is_reproducible(tmp_path: Path) -> None:
    held = [CAMERA[:200, :200], CAMERA[200:, 200:]]
    data = make_test_set(held, 3, 32, SynthesisRecipe(), seed=11)
    again = make_test_set(held, 3, 32, SynthesisRecipe(), seed=11)
    np.testing.assert_array_equal(data["images"], again["images"])
    assert data["images"].shape == data["sigma_px"].shape == (3, 32, 32)
    assert list(data["source_index"]) == [0, 1, 0]
    path = save_test_set(tmp_path / "t.npz", data)
    back = load_test_set(path)
    np.testing.assert_array_equal(back["sigma_px"], data["sigma_px"])
    assert back["map_kind"].tolist() == data["map_kind"].tolist()
    assert SynthesisRecipe.model_validate_json(str(back["recipe_json"])) == SynthesisRecipe()


def test_load_test_set_explains_a_wrong_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable test set"):
        load_test_set(bad)
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="missing images"):
        load_test_set(tmp_path / "other.npz")


# --------------------------------------------------------------------------- sources


def test_default_sources_split_by_image_with_scene_textures_held_out() -> None:
    train, held = load_named_sources()
    assert len(train) >= 8 and len(held) >= 3
    assert not set(train) & set(held)
    from hdme_focus.textures import SCENE_TEXTURES

    assert SCENE_TEXTURES and set(SCENE_TEXTURES) <= set(held)
    for img in (*train.values(), *held.values()):
        assert img.dtype == np.float32 and img.ndim == 2
        assert img.min() >= 0.0 and img.max() <= 1.0
    assert list(load_named_sources()[1]) == list(held)  # same split every time


def test_split_respects_fraction_and_forced_names() -> None:
    names = [f"im{i}" for i in range(8)]
    train, held = split_names(names, 0.25, seed=3, forced_heldout=("im5",))
    assert len(held) == 2 and "im5" in held and not set(train) & set(held)
    assert split_names(names, 0.0, seed=3) == (names, [])
    with pytest.raises(ImageInputError, match="none left for training"):
        split_names(["only"], 0.5, seed=0)


def test_folder_sources(tmp_path: Path) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"p{i}.png"), (CAMERA[: 64 + i, :64] * 255).astype(np.uint8))
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "broken.png").write_bytes(b"garbage")
    train, held = load_source_images(tmp_path, heldout_fraction=0.3, seed=0)
    assert len(train) == 2 and len(held) == 1
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ImageInputError, match="no readable images"):
        load_source_images(empty)
    with pytest.raises(FileNotFoundError):
        load_source_images(tmp_path / "missing")


# --------------------------------------------------------------------------- issue 11 families

from hdme_focus.estimation import camera_effects as cam  # noqa: E402
from hdme_focus.estimation.sources import (  # noqa: E402
    EVAL_MICROSCOPY,
    EVAL_PHOTOS,
    FEATURELESS_FAMILIES,
    PROCEDURAL,
    area_downscale,
)
from hdme_focus.estimation.synthesis import SourceWeights  # noqa: E402


def _gradient_loss(img: F32, sigma_px: float) -> float:
    """Share of gradient energy a further blur of sigma_px removes: high for sharp images."""
    g = np.gradient(img.astype(np.float64))
    b = np.gradient(ndimage.gaussian_filter(img.astype(np.float64), sigma_px))
    e0 = float((g[0] ** 2 + g[1] ** 2).mean())
    e1 = float((b[0] ** 2 + b[1] ** 2).mean())
    return 1.0 - e1 / max(e0, 1e-20)


@pytest.mark.parametrize("family", sorted(set(PROCEDURAL) - set(FEATURELESS_FAMILIES)))
def test_procedural_sources_are_sharp_seeded_and_in_range(family: str) -> None:
    make = PROCEDURAL[family]  # type: ignore[index]
    a = make(96, np.random.default_rng(5))
    assert a.shape == (96, 96) and a.dtype == np.float32
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0 and float(a.std()) > 0.01
    np.testing.assert_array_equal(a, make(96, np.random.default_rng(5)))
    # A 0.7 px blur removes much of a sharp image's gradient energy; of a 1.5 px-blurred
    # copy of the same image it removes far less: the sources carry no blur of their own.
    soft = ndimage.gaussian_filter(a.astype(np.float64), 1.5).astype(np.float32)
    assert _gradient_loss(a, 0.7) > 0.3
    assert _gradient_loss(a, 0.7) > 1.5 * _gradient_loss(soft, 0.7)


def test_area_downscale_averages_blocks() -> None:
    img = np.arange(36, dtype=np.float32).reshape(6, 6)
    out = area_downscale(img, 3)
    assert out.shape == (2, 2) and out[0, 0] == pytest.approx(img[:3, :3].mean())


def test_benchmark_photos_never_reach_training() -> None:
    train, held = load_named_sources()
    assert not set(train) & set(EVAL_PHOTOS + EVAL_MICROSCOPY)
    assert {"brick", "chelsea", "cell"} <= set(held)


def _physical(**kw: Any) -> SynthesisRecipe:
    return SynthesisRecipe(
        psf="physical",
        sources=SourceWeights(photos=0.2, dead_leaves=0.2, power_law=0.2, lines_text=0.2,
                              fluorescence=0.2, blank=0.1),
        natural_downscale=3,
        contrast=(0.02, 1.0),
        contrast_log_uniform=True,
        **kw,
    )  # fmt: skip


def test_default_recipe_draws_no_family_and_physical_recipe_draws_them_all() -> None:
    _, _, info = make_sample_with_info(CAMERA, np.random.default_rng(0), 32, SynthesisRecipe())
    assert info["family"] == "photos" and info["jpeg_quality"] == 0
    seen = {
        make_sample_with_info(CAMERA, np.random.default_rng(i), 32, _physical(**CLEAN))[2]["family"]
        for i in range(40)
    }
    assert seen == {"photos", *PROCEDURAL}


def test_blank_samples_stay_featureless_even_when_shuffling_is_drawn() -> None:
    """The featureless family teaches "no blur can be read here": shuffling its gentle
    illumination gradient would turn it into a sharp texture with a readable blur."""
    recipe = only(  # layered maps composite several fields: their occlusion edges are features
        "rectangles", sources=SourceWeights(photos=0.0, blank=1.0), shuffle_fraction=1.0, **CLEAN
    )
    for i in range(8):
        img, _, info = make_sample_with_info(CAMERA, np.random.default_rng(i), 48, recipe)
        assert info["family"] == "blank" and info["shuffled"]
        # a further 3 px blur changes nothing: there is no blur to read
        reblurred = ndimage.gaussian_filter(img.astype(np.float64), 3.0, mode="nearest")
        assert float(np.abs(img - reblurred)[8:-8, 8:-8].max()) < 0.005


def test_widefield_labels_are_the_kernels_own_second_moment() -> None:
    recipe = _physical(**CLEAN)
    for i in range(60):
        _, sig, info = make_sample_with_info(CAMERA, np.random.default_rng(i), 32, recipe)
        if info["psf"] == "widefield":
            assert (
                float(sig.min())
                >= min(cam.widefield_min_sigma_px(c) for c in cam.WIDEFIELD_CUTOFFS) - 1e-4
            )
            return
    pytest.fail("no widefield sample in 60 draws")


def test_camera_effects_change_the_image_not_the_label() -> None:
    plain = _physical(**CLEAN)
    camera = _physical(
        **CLEAN,
        camera=cam.CameraEffects(gamma_prob=1, demosaic_prob=1, sharpen_prob=1, jpeg_prob=1),
    )
    img0, sig0, _ = make_sample_with_info(CAMERA, np.random.default_rng(4), 48, plain)
    img1, sig1, info = make_sample_with_info(CAMERA, np.random.default_rng(4), 48, camera)
    np.testing.assert_array_equal(sig0, sig1)
    assert info["jpeg_quality"] >= 75 and info["bit_depth"] == 8 and info["demosaic"]
    assert not np.allclose(img0, img1)


def test_demosaic_of_a_flat_gray_is_that_gray_and_jpeg_keeps_the_mean() -> None:
    flat = np.full((32, 32), 0.4, np.float32)
    raw, gains = cam.mosaic(flat, np.random.default_rng(0))
    np.testing.assert_allclose(cam.demosaic(raw, gains), 0.4, atol=2e-3)
    tex = np.random.default_rng(1).random((64, 64)).astype(np.float32)
    assert float(cam.jpeg(tex, 90).mean()) == pytest.approx(float(tex.mean()), abs=0.01)


def test_low_contrast_is_drawn_log_uniformly() -> None:
    recipe = _physical(**CLEAN)
    spans = []
    for i in range(40):
        img, _, _ = make_sample_with_info(CAMERA, np.random.default_rng(100 + i), 32, recipe)
        spans.append(float(np.ptp(img)))
    assert min(spans) < 0.08 and max(spans) > 0.4


def test_small_sigma_prior_puts_its_share_in_focus_and_keeps_maps_monotone() -> None:
    plain = SynthesisRecipe()
    weighted = SynthesisRecipe(small_sigma_fraction=0.25, small_sigma_px=2.0)
    u = np.random.default_rng(0).uniform(0.0, 10.0, 200_000).astype(np.float32)
    assert np.array_equal(plain.warp_sigma(u), u)
    w = weighted.warp_sigma(u)
    assert np.mean(u < 2.0) == pytest.approx(0.20, abs=0.01)
    assert np.mean(w < 2.0) == pytest.approx(0.25 + 0.75 * 0.20, abs=0.01)
    assert np.mean(w < 1.0) == pytest.approx(0.125 + 0.75 * 0.10, abs=0.01)
    assert w.min() >= 0.0 and w.max() <= 10.0
    order = np.argsort(u)
    assert np.all(np.diff(w[order]) >= 0)  # monotone: a map's structure is kept
    # every map kind's labels follow the prior
    labels = []
    for i in range(60):
        _, sigma, _ = make_sample_with_info(CAMERA, np.random.default_rng(i), 32, weighted)
        labels.append(sigma.ravel())
    assert np.mean(np.concatenate(labels) < 2.0) > 0.3
