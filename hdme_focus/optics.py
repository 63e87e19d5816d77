"""Thin-lens relations between stage position, object distance and defocus blur.

Pure math, no I/O: the simulator renders with it and the calibration fits it,
so both speak exactly the same model. Lengths are millimetres, pixel pitch is
micrometres, blur is pixels.

    R = (f s / 2F) (1/f - 1/u - 1/s)       signed circle-of-confusion radius
    sigma = |R| / sqrt(2)                   Gaussian-equivalent blur

R > 0 when the sensor is behind the image plane (s > v, object nearer than the
focused distance), R < 0 in front of it. Blur is unsigned: one frame cannot
tell the two sides apart, unless the lens has axial chromatic aberration.

Axial (longitudinal) chromatic aberration: the focal length depends on the
wavelength, so red, green and blue focus at different depths and the
red-minus-blue blur changes sign through focus. `axial_chromatic_mm` is
f_red - f_blue (a simple positive lens has f_red > f_blue, about f/V: 0.8 mm for
a 50 mm BK7 singlet; an achromat a few hundredths); green keeps the nominal f.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

SQRT2 = math.sqrt(2.0)
FocusSetup = Literal["image", "object"]
CHANNELS: tuple[str, str, str] = ("red", "green", "blue")
# focal length of each channel relative to green, in units of axial_chromatic_mm
CHANNEL_FOCAL_SHIFT: tuple[float, float, float] = (0.5, 0.0, -0.5)


def coc_radius_mm(
    focal_length_mm: float,
    f_number: float,
    sensor_distance_mm: ArrayLike,
    object_distance_mm: ArrayLike,
) -> NDArray[np.float64]:
    """Signed circle-of-confusion radius R in mm (inf object distance allowed)."""
    f = float(focal_length_mm)
    s = np.asarray(sensor_distance_mm, dtype=np.float64)
    u = np.asarray(object_distance_mm, dtype=np.float64)
    with np.errstate(divide="ignore"):
        inv_u = np.where(np.isinf(u), 0.0, 1.0 / u)
    return np.asarray((f * s / (2.0 * f_number)) * (1.0 / f - inv_u - 1.0 / s), dtype=np.float64)


def sigma_px_from_coc(coc_radius: ArrayLike, pixel_pitch_um: float) -> NDArray[np.float64]:
    """Gaussian blur sigma in pixels from a CoC radius in mm: sigma = |R| / sqrt(2)."""
    r_mm = np.abs(np.asarray(coc_radius, dtype=np.float64))
    return np.asarray(r_mm / SQRT2 / (pixel_pitch_um * 1e-3), dtype=np.float64)


def image_distance_mm(focal_length_mm: float, object_distance_mm: ArrayLike) -> NDArray[np.float64]:
    """Lens-to-image distance v where an object at u is in focus (1/f = 1/u + 1/v)."""
    u = np.asarray(object_distance_mm, dtype=np.float64)
    f = float(focal_length_mm)
    with np.errstate(divide="ignore"):
        inv_u = np.where(np.isinf(u), 0.0, 1.0 / u)
    return np.asarray(1.0 / (1.0 / f - inv_u), dtype=np.float64)


def object_distance_mm(focal_length_mm: float, image_distance: ArrayLike) -> NDArray[np.float64]:
    """Object distance u focused at image distance v; inf when v == f."""
    v = np.asarray(image_distance, dtype=np.float64)
    f = float(focal_length_mm)
    denom = 1.0 / f - 1.0 / v
    with np.errstate(divide="ignore"):
        return np.asarray(np.where(np.abs(denom) < 1e-15, np.inf, 1.0 / denom), dtype=np.float64)


@dataclass(frozen=True)
class ThinLens:
    """A lens and sensor, and how the focus stage changes the geometry.

    setup "image": the stage moves the sensor (or lens) so s = s0 + z, as in the
    HDME-Net experiment. setup "object": the stage moves the sample so
    u = u_scene + z, as on a microscope; s stays at s0. `axial_chromatic_mm`
    (f_red - f_blue, 0: corrected) only matters to `channel_lenses`.
    """

    focal_length_mm: float
    f_number: float
    pixel_pitch_um: float
    sensor_distance_mm: float
    setup: FocusSetup = "image"
    axial_chromatic_mm: float = 0.0

    @property
    def chromatic(self) -> bool:
        return self.axial_chromatic_mm != 0.0

    def channel_lenses(self) -> tuple[ThinLens, ThinLens, ThinLens]:
        """The red, green and blue lenses: focal length f + shift * axial_chromatic_mm."""
        a = self.axial_chromatic_mm
        r, g, b = (
            replace(self, focal_length_mm=self.focal_length_mm + shift * a, axial_chromatic_mm=0.0)
            for shift in CHANNEL_FOCAL_SHIFT
        )
        return r, g, b

    @property
    def aperture_mm(self) -> float:
        return self.focal_length_mm / self.f_number

    def geometry(
        self, position_mm: float, scene_distance_mm: ArrayLike
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(s, u) in mm at a stage position for objects at scene distance u_scene."""
        u_scene = np.asarray(scene_distance_mm, dtype=np.float64)
        if self.setup == "image":
            s = np.full_like(u_scene, self.sensor_distance_mm + position_mm)
            return s, u_scene
        s = np.full_like(u_scene, self.sensor_distance_mm)
        return s, u_scene + position_mm

    def coc_mm(self, position_mm: float, scene_distance_mm: ArrayLike) -> NDArray[np.float64]:
        s, u = self.geometry(position_mm, scene_distance_mm)
        return coc_radius_mm(self.focal_length_mm, self.f_number, s, u)

    def sigma_px(self, position_mm: float, scene_distance_mm: ArrayLike) -> NDArray[np.float64]:
        """Per-object Gaussian blur in pixels at a stage position."""
        return sigma_px_from_coc(self.coc_mm(position_mm, scene_distance_mm), self.pixel_pitch_um)

    def focus_position_mm(self, scene_distance_mm: ArrayLike) -> NDArray[np.float64]:
        """Stage position that brings objects at u_scene into focus."""
        u_scene = np.asarray(scene_distance_mm, dtype=np.float64)
        if self.setup == "image":
            return image_distance_mm(self.focal_length_mm, u_scene) - self.sensor_distance_mm
        u_focus = object_distance_mm(self.focal_length_mm, self.sensor_distance_mm)
        return np.asarray(u_focus - u_scene, dtype=np.float64)

    def slope_px_per_mm(self, scene_distance_mm: float) -> float:
        """d sigma / d z near focus (the V-curve slope k) for an object at u_scene.

        Image side: k = D / (2 sqrt(2) p v); object side the same blur per unit of
        image-side defocus times the longitudinal magnification (v/u)^2.
        """
        u = float(scene_distance_mm)
        pitch_mm = self.pixel_pitch_um * 1e-3
        if self.setup == "image":
            v = float(image_distance_mm(self.focal_length_mm, u))
            return self.aperture_mm / (2.0 * SQRT2 * pitch_mm * v)
        z0 = float(self.focus_position_mm(u))
        u_focus = u + z0
        v = self.sensor_distance_mm
        return self.aperture_mm / (2.0 * SQRT2 * pitch_mm * v) * (v / u_focus) ** 2

    def depth_of_focus_mm(self, scene_distance_mm: float, sigma_tolerance_px: float = 0.5) -> float:
        """Half-width in stage mm over which blur stays below sigma_tolerance_px."""
        return sigma_tolerance_px / self.slope_px_per_mm(scene_distance_mm)
