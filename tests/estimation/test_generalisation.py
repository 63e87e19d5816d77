"""Issue 11: the default estimator on images no training made, and on the real frames.

Frames come from the independent renderer (`eval_render`: FFT blur, shares no
code with training synthesis). Checks the shipped default does not meet yet are
strict xfails whose reason holds the measured numbers: a retrain that fixes
them turns the xfail into a failure, so the mark gets removed.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

import cv2
import numpy as np
import pytest
from sim_oracle import truth_calibration

from hdme_focus.config import CameraConfig, InstrumentConfig, SceneConfig
from hdme_focus.core.frame import F32
from hdme_focus.core.roi import Roi
from hdme_focus.estimation import eval_render as er
from hdme_focus.estimation import real_sets
from hdme_focus.estimation.base import MIN_LEARNED_CONFIDENCE, DefocusEstimator
from hdme_focus.estimation.camera_effects import jpeg
from hdme_focus.estimation.registry import DEFAULT_ESTIMATOR, create_estimator
from hdme_focus.instrument.autofocus import HdmeOptions, autofocus_hdme
from hdme_focus.instrument.devices import open_instrument
from hdme_focus.instrument.session import AutofocusRefused

SIGMAS_PX = (1.0, 2.0, 4.0, 8.0)
TOLERANCE = 0.15
SIZE_PX = 160
SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"


@cache
def default() -> DefocusEstimator:
    return create_estimator(DEFAULT_ESTIMATOR, "cpu")


def plane(sigma_px: float, contrast: float, *, kind: str = "texture", offset: float = 0.2) -> F32:
    """A fronto-parallel plane at one sigma (Gaussian PSF), 8-bit, mild noise."""
    rng = np.random.default_rng(int(sigma_px * 10))
    if kind == "fluorescence":
        src = er.fluorescence_cells(SIZE_PX + 80, rng)
    else:
        src = er.voronoi_texture(SIZE_PX + 80, rng)
    src = (src - src.min()) / max(float(np.ptp(src)), 1e-9)
    radiance = (0.02 if kind == "fluorescence" else offset) + contrast * src
    blurred = er.fft_blur(radiance, er.transfer_function("gaussian", sigma_px, radiance.shape))
    electrons = rng.poisson(np.clip(blurred, 0, 1) * 20000.0) / 20000.0
    img = np.round(np.clip(electrons, 0, 1) * 255) / 255
    return np.asarray(img[40:-40, 40:-40], dtype=np.float32)


def median_sigma(image: F32) -> float:
    est = default().estimate(image)
    return float(np.median(est.sigma_px[16:-16, 16:-16]))


def _within(value: float, truth: float) -> bool:
    return abs(value - truth) <= TOLERANCE * truth


def known_miss(measured: str) -> pytest.MarkDecorator:
    """A target the shipped default misses, with what it measured (issue 11)."""
    return pytest.mark.xfail(strict=True, reason=f"shipped {DEFAULT_ESTIMATOR}: {measured}")


CONTRAST_CASES = [
    pytest.param(1.0, marks=known_miss("2 % / full contrast read 2.99 / 2.42 px at sigma 1")),
    pytest.param(2.0, marks=known_miss("2 % / full contrast read 4.88 / 3.95 px at sigma 2")),
    pytest.param(4.0, marks=known_miss("2 % / full contrast read 7.06 / 5.23 px at sigma 4")),
    pytest.param(8.0, marks=known_miss("2 % / full contrast read 8.02 / 6.19 px at sigma 8")),
]
FLUORESCENCE_CASES = [
    pytest.param(1.0, marks=known_miss("dark sparse frame reads 2.09 px at sigma 1")),
    pytest.param(2.0, marks=known_miss("dark sparse frame reads 2.65 px at sigma 2")),
    4.0,
    8.0,
]
JPEG_CASES = [
    pytest.param(1.0, marks=known_miss("JPEG q80 reads 2.42 px at sigma 1")),
    pytest.param(2.0, marks=known_miss("JPEG q80 reads 3.91 px at sigma 2")),
    pytest.param(4.0, marks=known_miss("JPEG q80 reads 5.22 px at sigma 4")),
    pytest.param(8.0, marks=known_miss("JPEG q80 reads 6.14 px at sigma 8")),
]


@pytest.mark.parametrize("sigma_px", CONTRAST_CASES)
def test_low_and_full_contrast_read_the_same_blur(sigma_px: float) -> None:
    low = median_sigma(plane(sigma_px, 0.02, offset=0.4))
    full = median_sigma(plane(sigma_px, 0.8, offset=0.1))
    assert _within(low, sigma_px) and _within(full, sigma_px), (low, full)
    assert abs(low - full) <= TOLERANCE * max(low, full)


@pytest.mark.parametrize("sigma_px", FLUORESCENCE_CASES)
def test_dark_sparse_fluorescence_reads_its_blur(sigma_px: float) -> None:
    img = plane(sigma_px, 0.6, kind="fluorescence")
    est = default().estimate(img)
    bright = img > np.quantile(img, 0.9)  # where the structure is
    value = float(np.median(est.sigma_px[bright]))
    assert _within(value, sigma_px), value


@pytest.mark.parametrize("sigma_px", JPEG_CASES)
def test_jpeg_compressed_frame_reads_its_blur(sigma_px: float) -> None:
    value = median_sigma(jpeg(plane(sigma_px, 0.6), 80))
    assert _within(value, sigma_px), value


def test_featureless_frame_has_low_confidence_everywhere() -> None:
    """The default's texture heuristic counts only contrast beyond the frame's noise (it
    read 0.30 at the 95th percentile when the noise counted as texture)."""
    rng = np.random.default_rng(3)
    flat = np.clip(0.5 + rng.normal(0, 0.004, (SIZE_PX, SIZE_PX)), 0, 1).astype(np.float32)
    conf = default().estimate(flat).confidence
    assert float(np.quantile(conf, 0.95)) < 0.2, float(np.quantile(conf, 0.95))


def test_the_learned_confidence_is_low_on_a_featureless_frame_and_autofocus_refuses_it(
    tmp_path: Path,
) -> None:
    """`hdme-lite-conf`, the shipped model with a learned error scale: a flat noisy frame
    reads low confidence everywhere, a textured one does not, and autofocus on a blank
    wall refuses without moving the stage."""
    est = create_estimator("hdme-lite-conf", "cpu")
    rng = np.random.default_rng(3)
    flat = np.clip(0.5 + rng.normal(0, 0.004, (SIZE_PX, SIZE_PX)), 0, 1).astype(np.float32)
    conf = est.estimate(flat).confidence
    assert float(np.quantile(conf, 0.95)) < MIN_LEARNED_CONFIDENCE, float(np.quantile(conf, 0.95))
    textured = est.estimate(plane(2.0, 0.6)).confidence
    assert float(np.median(textured)) > 2 * MIN_LEARNED_CONFIDENCE

    wall = np.clip(128 + rng.normal(0, 1.0, (120, 160)), 0, 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "wall.png"), wall)
    np.save(tmp_path / "depth.npy", np.full((120, 160), 1300.0))
    cfg = InstrumentConfig(
        camera=CameraConfig(width_px=160, height_px=120),
        scene=SceneConfig(name="image", image=tmp_path / "wall.png", depth=tmp_path / "depth.npy"),
    )
    with open_instrument(cfg) as inst:
        cal = truth_calibration(inst)
        inst.stage.travel_to(1.6)
        moves = inst.stage.moves
        with pytest.raises(AutofocusRefused):
            autofocus_hdme(inst, Roi(40, 30, 80, 60), est, cal, HdmeOptions("auto"))
        assert inst.stage.position_mm() == 1.6 and inst.stage.moves == moves


def test_a_blank_wall_under_a_noisy_camera_is_refused_by_the_default(tmp_path: Path) -> None:
    """Camera noise above the texture threshold (std ~0.017 of full scale: 300 e- of a
    1000 e- well) is not texture: the default refuses without moving (it read the noise as
    texture, 100 % of the ROI, and moved on a 7 px "blur")."""
    wall = np.full((120, 160), 128, np.uint8)
    cv2.imwrite(str(tmp_path / "wall.png"), wall)
    np.save(tmp_path / "depth.npy", np.full((120, 160), 1300.0))
    cfg = InstrumentConfig(
        camera=CameraConfig(width_px=160, height_px=120, full_well_e=1000.0, exposure_ms=1.0),
        scene=SceneConfig(name="image", image=tmp_path / "wall.png", depth=tmp_path / "depth.npy"),
    )
    with open_instrument(cfg) as inst:
        frame = inst.camera.capture()
        gray = frame.image.astype(np.float32) / (2**frame.bit_depth - 1)
        assert float(gray.std()) > 0.012  # the camera's noise is above TEXTURE_STD
        cal = truth_calibration(inst)
        inst.stage.travel_to(1.6)
        moves = inst.stage.moves
        with pytest.raises(AutofocusRefused):
            autofocus_hdme(inst, Roi(40, 30, 80, 60), default(), cal, HdmeOptions("auto"))
        assert inst.stage.position_mm() == 1.6 and inst.stage.moves == moves


# --------------------------------------------------------------------------- real frames


@pytest.mark.skipif(not (SHARED / real_sets.PCB_DIR).is_dir(), reason="shared PCB sweep absent")
def test_pcb_regions_read_more_blur_away_from_their_sharpest_frame() -> None:
    """Downscaled 2x to stay fast; the reference sharpest frame is estimator-free."""
    score = real_sets.score_pcb(
        SHARED / real_sets.PCB_DIR, lambda g: default().estimate(g, downscale=2.0)
    )
    assert score.spearman_median_region >= 0.9, score.spearman_median_region
    assert score.vmin_agree >= 0.75, score.vmin_agree


@cache
def flake_field_score() -> real_sets.FlakeScore:
    frames = real_sets.read_flake(
        SHARED / real_sets.FLAKE_DIR,
        lambda g: default().estimate(g, downscale=2.0),
        tiles=(real_sets.FLAKE_FIELD,),
    )
    return real_sets.score_flake(frames)


@pytest.mark.skipif(not (SHARED / real_sets.FLAKE_DIR).is_dir(), reason="flake set absent")
@known_miss("flake box reading has rank correlation 0.75 with |defocus| (downscale 2)")
def test_flake_field_reading_grows_with_defocus() -> None:
    score = flake_field_score()
    assert score.spearman_field >= 0.9, (score.spearman_field, score.field_sigma_px)


@pytest.mark.skipif(not (SHARED / real_sets.FLAKE_DIR).is_dir(), reason="flake set absent")
def test_flake_box_as_autofocus_reads_it_grows_with_defocus_or_is_refused() -> None:
    """What autofocus acts on: the in-focus frames are read, the reading rises with
    |defocus| over the frames read, and a refused frame is never nearer focus than a
    read one (a dissolved flake is refused, not read as sharp)."""
    score = flake_field_score()
    pts = score.field_read_sigma_px  # sorted by |defocus|
    read = [np.isfinite(s) for _, s in pts]
    assert read[0] and read[1], pts  # the two in-focus frames
    assert score.field_read_frames >= 6, pts
    first_refused = read.index(False) if False in read else len(read)
    assert all(not r for r in read[first_refused:]), pts  # refusals only beyond the reads
    assert score.spearman_field_read >= 0.9, (score.spearman_field_read, pts)
