"""Test-only stand-in for a defocus estimator: reads the simulator's ground truth.

Lets autofocus, depth and calibration tests check the procedures without
depending on the trained model's accuracy. Never used outside tests.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from hdme_focus.calibration.fit import fit_vcurve
from hdme_focus.calibration.model import Calibration, SweepSource, build_calibration
from hdme_focus.drivers.sim import SimCamera
from hdme_focus.estimation.base import DefocusEstimate
from hdme_focus.instrument.devices import Instrument


class OracleEstimator:
    """Ground-truth sigma: the whole map for a full frame, the ROI's median for a crop.

    `noise_px` adds Gaussian noise (seeded) to mimic an imperfect estimator.
    """

    name = "oracle-test-only"
    sigma_max_px = math.inf  # reads any blur: the truth has no ceiling

    def __init__(
        self,
        camera: SimCamera,
        roi: tuple[int, int, int, int] | None = None,
        noise_px: float = 0.0,
        seed: int = 0,
        sigma_max_px: float | None = None,
    ) -> None:
        self.camera = camera
        self.roi = roi
        self.noise_px = noise_px
        self.rng = np.random.default_rng(seed)
        if sigma_max_px is not None:
            self.sigma_max_px = sigma_max_px

    def predict(
        self, image: ArrayLike, bit_depth: int | None = None, **_: Any
    ) -> NDArray[np.float32]:
        truth = self.camera.true_sigma_px()
        shape = np.asarray(image).shape[:2]
        if shape == truth.shape:
            out = truth.astype(np.float32)
        else:
            if self.roi is None:
                raise ValueError("OracleEstimator needs the ROI to answer for a crop")
            x, y, w, h = self.roi
            out = np.full(shape, float(np.median(truth[y : y + h, x : x + w])), np.float32)
        if self.noise_px:
            out = out + np.float32(self.rng.normal(0.0, self.noise_px))
        return np.maximum(out, 0.0).astype(np.float32)

    def estimate(
        self, image: ArrayLike, bit_depth: int | None = None, **kwargs: Any
    ) -> DefocusEstimate:
        sigma = self.predict(image, bit_depth, **kwargs)
        return DefocusEstimate(sigma, np.ones_like(sigma))


def truth_calibration(inst: Instrument, names: list[str] | None = None) -> Calibration:
    """Calibration fitted to the simulator's ground-truth blur (no rendering, no model)."""
    cam: Any = inst.camera
    z = np.arange(0.3, 2.71, 0.05)
    maps = [cam.true_sigma_px(float(p)) for p in z]
    fits = []
    for name, box in cam.scene.regions.items():
        if names is not None and name not in names:
            continue
        x, y, w, h = box
        fits.append(
            (name, box, fit_vcurve(z, [float(np.median(m[y : y + h, x : x + w])) for m in maps]))
        )
    return build_calibration(
        fits,
        lens=inst.config.optics.lens(),
        sweep=SweepSource(path="ground-truth", frames=len(z), range_mm=(0.3, 2.7)),
        estimator=OracleEstimator.name,
        frame_size_px=(cam.config.width_px, cam.config.height_px),
    )
