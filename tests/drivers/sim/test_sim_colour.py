"""The simulated camera with axial chromatic aberration: RGB only when asked for."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from hdme_focus.config import (
    CameraConfig,
    ConfigError,
    InstrumentConfig,
    OpticsConfig,
    load_config,
)
from hdme_focus.drivers.sim import SimCamera, open_sim


def _camera(axial_mm: float) -> SimCamera:
    cfg = InstrumentConfig(
        camera=CameraConfig(width_px=96, height_px=64),
        optics=OpticsConfig(axial_chromatic_mm=axial_mm),
    )
    return open_sim(cfg)[1]


def test_off_by_default_frames_stay_gray() -> None:
    assert InstrumentConfig().optics.axial_chromatic_mm == 0.0
    frame = _camera(0.0).capture()
    assert frame.image.ndim == 2


def test_chromatic_frames_are_rgb_with_green_the_nominal_lens() -> None:
    gray, colour = _camera(0.0), _camera(0.3)
    rgb = colour.render(1.2)
    assert rgb.shape == (64, 96, 3)
    np.testing.assert_allclose(rgb[..., 1], gray.render(1.2), atol=1e-6)
    assert not np.allclose(rgb[..., 0], rgb[..., 2], atol=1e-3)  # red and blue blur apart
    frame = colour.capture()
    assert frame.image.shape == (64, 96, 3) and frame.image.dtype == np.uint16


def test_aberration_larger_than_the_lens_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "i.toml"
    path.write_text("[optics]\naxial_chromatic_mm = 30.0\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="axial_chromatic_mm"):
        load_config(path)
