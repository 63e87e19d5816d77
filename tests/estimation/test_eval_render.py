"""The independent evaluation renderer and the training PSFs: sigma is the second moment."""

from __future__ import annotations

import numpy as np
import pytest

from hdme_focus.estimation import camera_effects as cam
from hdme_focus.estimation import eval_render as er
from hdme_focus.render import kernel_sigma_px


@pytest.mark.parametrize("psf", er.EVAL_PSFS)
@pytest.mark.parametrize("sigma_px", [1.5, 3.0, 8.0, 20.0])
def test_fft_blur_of_a_point_has_the_requested_second_moment(psf: str, sigma_px: float) -> None:
    point = np.zeros((256, 256))
    point[0, 0] = 1.0
    otf = er.transfer_function(psf, sigma_px, point.shape, cutoff_cyc_px=0.35)  # type: ignore[arg-type]
    spread = er.fft_blur(point, otf)
    assert abs(spread.sum() - 1.0) < 1e-6
    assert er.second_moment_px(spread) == pytest.approx(sigma_px, rel=0.01)


def test_widefield_psf_of_training_and_of_evaluation_agree_though_built_apart() -> None:
    """Radial J0 integral (training) vs 2-D FFT of the pupil (evaluation): one physics."""
    for cutoff in (0.25, 0.45):
        assert cam.widefield_min_sigma_px(cutoff) == pytest.approx(
            er.widefield_min_sigma_px(cutoff), rel=0.06
        )
    for sigma_px in (2.0, 5.0, 9.0):
        kernel = cam.widefield_kernel(sigma_px, 0.35)
        assert kernel_sigma_px(kernel) == pytest.approx(sigma_px, rel=0.05)


def test_a_widefield_frame_is_never_sharper_than_the_diffraction_limit() -> None:
    rng = np.random.default_rng(0)
    src = er.voronoi_texture(200, rng)
    s = er.render_sample(
        src, rng, size_px=64, sigma_range_px=(0.0, 0.5), psf="widefield", noise="low", family="t"
    )
    assert float(s.sigma_px.min()) >= er.widefield_min_sigma_px(0.45)


def test_occlusion_edges_are_not_scored_and_planes_are() -> None:
    truth = np.full((64, 64), 1.0)
    truth[:, 32:] = 4.0
    ok = er.scorable(truth)
    assert ok[:, :15].all() and ok[:, 50:].all()  # 3 x 4 px from the edge is clear
    assert not ok[:, 28:36].any()


def test_noise_levels_rank_and_the_textured_mask_drops_flat_regions() -> None:
    clean = np.full((64, 64), 0.5)
    clean[:, :32] += 0.2 * np.sin(np.arange(32) * 1.3)[None, :]
    stds = [er.noise_std(clean, lv) for lv in er.NOISE_LEVELS]
    assert stds == sorted(stds)
    tex = er.textured_truth(clean, "low")
    assert tex[:, :20].all() and not tex[:, 45:].any()


def test_a_large_blur_read_downscaled_is_textured_where_that_pass_sees_structure() -> None:
    """A broad, faint gradient field: flat in a 15 px window under full-resolution noise,
    structured in the 60 px window and the 4x quieter frame the x4 pass reads."""
    x = np.arange(256, dtype=np.float64)
    clean = np.tile(0.5 + 0.05 * np.sin(2 * np.pi * x / 160.0), (256, 1))
    at_1x = er.textured_truth(clean, "mid").mean()
    at_4x = er.textured_truth(clean, "mid", read_downscale=4.0).mean()
    assert at_1x < 0.2 and at_4x > 0.8


def test_fine_detail_marks_sharp_scenes_and_not_smooth_or_blurred_ones() -> None:
    """The benchmark's split of the 0-2 px bins: a sharp Voronoi scene has fine detail,
    the same scene blurred 2 px and a smooth sinusoid (whose blur one frame cannot tell
    from its own smoothness) do not."""
    rng = np.random.default_rng(0)
    sharp = 0.2 + 0.6 * er.voronoi_texture(128, rng)
    assert er.fine_detail_truth(sharp, "low").mean() > 0.8
    blurred = er.composite([sharp], [er.EvalLayer(np.ones((128, 128)), 2.0)], "gaussian")
    assert er.fine_detail_truth(blurred, "low").mean() < 0.1
    xx = np.mgrid[0:128, 0:128][1].astype(np.float64)
    wave = 0.5 + 0.3 * np.sin(2 * np.pi * xx / 30.0)
    assert er.fine_detail_truth(wave, "low").mean() == 0.0
