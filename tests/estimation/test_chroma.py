"""The chroma cue: the right sign on both sides of focus, silence where colour says nothing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from hdme_focus.config import CameraConfig, InstrumentConfig, OpticsConfig
from hdme_focus.drivers.sim import SimCamera, open_sim
from hdme_focus.estimation.chroma import chroma_cue
from hdme_focus.render import quantize

AXIAL_MM = 0.25


def _bench(axial_mm: float) -> tuple[SimCamera, tuple[int, int, int, int], float]:
    cfg = InstrumentConfig(
        camera=CameraConfig(width_px=160, height_px=120),
        optics=OpticsConfig(axial_chromatic_mm=axial_mm),
    )
    _, camera, _ = open_sim(cfg)
    x, y, w, h = (int(v) for v in camera.scene.regions["D"])
    return camera, (x, y, w, h), camera.focus_position_mm((x, y, w, h))


def _frame(camera: SimCamera, position_mm: float) -> np.ndarray:
    camera.position_source = lambda: position_mm
    return camera.capture().image


@pytest.mark.parametrize("offset_mm", [-1.2, -0.6, -0.3, 0.3, 0.6, 1.2])
def test_sign_follows_the_side_of_focus(offset_mm: float) -> None:
    # red focuses behind blue (f_red > f_blue, image side): above focus red is sharper
    camera, roi, z0 = _bench(AXIAL_MM)
    cue = chroma_cue(_frame(camera, z0 + offset_mm), roi)
    assert cue.speaks, cue.reason
    assert cue.red_sharper == (offset_mm > 0)


def test_reversed_aberration_reverses_the_sign() -> None:
    camera, roi, z0 = _bench(-AXIAL_MM)
    assert not chroma_cue(_frame(camera, z0 + 0.6), roi).red_sharper
    assert chroma_cue(_frame(camera, z0 - 0.6), roi).red_sharper


def test_gray_frames_abstain() -> None:
    camera, roi, z0 = _bench(0.0)
    gray = _frame(camera, z0 + 0.6)
    assert gray.ndim == 2  # off by default: the camera stays gray
    assert not chroma_cue(gray, roi).speaks
    assert not chroma_cue(np.stack([gray] * 3, axis=-1), roi).speaks  # a gray scene in RGB


def test_corrected_lens_abstains() -> None:
    # an RGB camera behind a corrected lens: the same blur, independent noise per channel
    camera, roi, z0 = _bench(0.0)
    radiance = camera.render(z0 + 0.6)
    rng = np.random.default_rng(1)
    rgb = np.stack([radiance + rng.normal(0, 0.01, radiance.shape) for _ in range(3)], axis=-1)
    assert not chroma_cue(quantize(rgb, 12), roi).speaks


def test_jpeg_colour_subsampling_with_a_weak_aberration_abstains() -> None:
    # 4:2:0 JPEG halves the colour resolution: a small blur difference is gone
    camera, roi, z0 = _bench(0.05)
    rgb16 = _frame(camera, z0 + 0.6)
    rgb8 = (rgb16 >> 4).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", rgb8[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    assert decoded is not None
    jpeg = decoded[..., ::-1]
    assert not chroma_cue(jpeg, roi).speaks


def test_channels_of_different_structure_abstain() -> None:
    camera, roi, z0 = _bench(AXIAL_MM)
    rgb = _frame(camera, z0 + 0.6).copy()
    rgb[..., 2] = np.random.default_rng(0).integers(0, 4096, rgb.shape[:2])  # unrelated blue
    cue = chroma_cue(rgb, roi)
    assert not cue.speaks
    assert "structure" in (cue.reason or "")
