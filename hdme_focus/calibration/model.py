"""The calibration file: versioned JSON of per-region V-curve fits and their source.

A calibration ties blur to stage travel for one instrument (optics, frame size)
and one estimator, so it records all three and refuses to be used with a
different one: a calibration made at f/8 gives wrong distances at f/4 without
any visible error. Loading never trusts the file: every problem becomes one
line naming the file, the field and the fix.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from hdme_focus.calibration.fit import (
    FitAssessment,
    VCurveFit,
    defocus_distance_mm,
    expand_px,
    relate_to_thin_lens,
    vcurve_sigma_px,
)
from hdme_focus.core.atomic import write_text_atomic
from hdme_focus.core.errors import UsageError
from hdme_focus.core.roi import Roi
from hdme_focus.optics import ThinLens

FORMAT: Literal["hdme-focus-calibration"] = "hdme-focus-calibration"
VERSION = 1
RECALIBRATE = "record a sweep (`hdme-focus sweep`) and run `hdme-focus calibrate SWEEP_DIR`"

Box = tuple[int, int, int, int]


class CalibrationFileError(UsageError):
    """A calibration file that cannot be used here; str() names the file and the fix."""


# A region read with the global calibration whose local contrast differs from every
# calibrated region's (at the same blur) by more than this factor is outside its coverage.
TEXTURE_COVERAGE_FACTOR = 4.0
GLOBAL_REGION = "all-regions"  # the name of the summary V-curve `for_roi` returns


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Units(_Strict):
    """Fixed units, written so a reader never has to guess."""

    position: Literal["mm"] = "mm"
    sigma: Literal["px"] = "px"
    slope: Literal["px/mm"] = "px/mm"
    distance: Literal["mm"] = "mm"


class OpticsRecord(_Strict):
    """The thin-lens parameters the calibration was made with."""

    focal_length_mm: float = Field(gt=0)
    f_number: float = Field(gt=0)
    pixel_pitch_um: float = Field(gt=0)
    sensor_distance_mm: float = Field(gt=0)
    setup: Literal["image", "object"]

    @classmethod
    def from_lens(cls, lens: ThinLens) -> OpticsRecord:
        return cls(
            focal_length_mm=lens.focal_length_mm,
            f_number=lens.f_number,
            pixel_pitch_um=lens.pixel_pitch_um,
            sensor_distance_mm=lens.sensor_distance_mm,
            setup=lens.setup,
        )

    def lens(self) -> ThinLens:
        return ThinLens(
            self.focal_length_mm,
            self.f_number,
            self.pixel_pitch_um,
            self.sensor_distance_mm,
            self.setup,
        )


class SweepSource(_Strict):
    """Where the data came from."""

    path: str
    frames: int = Field(ge=0)
    status: str = "complete"
    range_mm: tuple[float, float]
    created: str | None = None


def _curve_fields(fit: VCurveFit) -> dict[str, Any]:
    """The V-curve and its quality, as every persisted curve records them."""
    return {
        "z0_mm": fit.z0_mm,
        "k_px_per_mm": fit.k_px_per_mm,
        "sigma0_px": fit.sigma0_px,
        "rmse_px": fit.rmse_px,
        "r2": fit.r2,
        "n_points": fit.n_points,
        "range_mm": fit.range_mm,
        "sigma_range_px": fit.sigma_range_px,
        "saturation_px": fit.saturation_px,
    }


class _ReadsDistance:
    """|z - z0| from a blur reading, for the models that hold a V-curve's k, sigma0, c."""

    if TYPE_CHECKING:  # the models' fields; kept out of the runtime class, so pydantic
        k_px_per_mm: float  # neither adds nor reorders them
        sigma0_px: float
        saturation_px: float | None

    def distance_mm(self, sigma_px: float) -> float:
        """Unsigned |z - z0| for a measured blur (inf at or above the saturation)."""
        return float(
            defocus_distance_mm(sigma_px, self.k_px_per_mm, self.sigma0_px, self.saturation_px)
        )

    def distance_error_mm(self, sigma_px: float) -> float:
        """1-sigma error of `distance_mm` (see the module function)."""
        return distance_error_mm(sigma_px, self.k_px_per_mm, self.sigma0_px, self.saturation_px)


class CoarseFit(_Strict, _ReadsDistance):
    """The V-curve of blur estimated on frames downscaled by `downscale` (sigma rescaled).

    Extends the usable range beyond the estimator's trained maximum, where the
    full-resolution reading saturates; fitted separately because an estimator's
    floor and bias differ between scales.
    """

    downscale: float = Field(gt=1)
    z0_mm: float
    k_px_per_mm: float = Field(gt=0)
    sigma0_px: float = Field(ge=0)
    rmse_px: float = Field(ge=0)
    r2: float
    n_points: int = Field(ge=0)
    range_mm: tuple[float, float]
    sigma_range_px: tuple[float, float]
    saturation_px: float | None = Field(default=None, gt=0)  # the reading's compression c

    @classmethod
    def from_fit(cls, fit: VCurveFit, downscale: float) -> CoarseFit:
        return cls(downscale=downscale, **_curve_fields(fit))


class RoiCalibration(_Strict, _ReadsDistance):
    """One region's V-curve, its quality and its thin-lens reading."""

    name: str
    roi: Box | None = None  # x, y, w, h in px; None = whole frame
    z0_mm: float
    k_px_per_mm: float = Field(gt=0)
    sigma0_px: float = Field(ge=0)
    dof_mm: float = Field(gt=0)  # full depth of focus, 1/k
    z0_stderr_mm: float = Field(ge=0)
    rmse_px: float = Field(ge=0)
    r2: float
    n_points: int = Field(ge=0)
    n_outliers: int = Field(ge=0)
    range_mm: tuple[float, float]
    sigma_range_px: tuple[float, float] | None = None  # blur over which the curve was fitted
    saturation_px: float | None = Field(default=None, gt=0)  # the reading's compression c
    object_distance_mm: float | None = None  # u of the region, stage at 0
    k_thin_lens_px_per_mm: float | None = None
    f_number_fit: float | None = None
    coarse: CoarseFit | None = None  # for blur beyond the estimator's range
    z0_bootstrap_mm: float | None = None  # z0 spread over refits to resampled frames
    warnings: list[str] = Field(default_factory=list)  # accepted, but said on the line
    # (blur px, median local contrast) of the sweep's frames: the textures this fit has seen
    contrast_curve: list[tuple[float, float]] | None = None

    @field_validator("z0_mm", "k_px_per_mm", "sigma0_px", "dof_mm")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    def sigma_px(self, position_mm: float) -> float:
        """The reading the curve predicts at a stage position."""
        return float(
            vcurve_sigma_px(
                position_mm, self.z0_mm, self.k_px_per_mm, self.sigma0_px, self.saturation_px
            )
        )

    @classmethod
    def from_fit(
        cls,
        name: str,
        roi: Box | None,
        fit: VCurveFit,
        lens: ThinLens | None,
        coarse: CoarseFit | None = None,
        assessment: FitAssessment | None = None,
    ) -> RoiCalibration:
        rel = relate_to_thin_lens(fit, lens) if lens is not None else None

        def finite(v: float | None) -> float | None:
            return v if v is not None and math.isfinite(v) else None

        stderr = assessment.z0_uncertainty_mm if assessment is not None else fit.z0_stderr_mm
        return cls(
            name=name,
            roi=roi,
            **_curve_fields(fit),
            dof_mm=fit.dof_mm,
            z0_stderr_mm=stderr if math.isfinite(stderr) else 1e9,
            z0_bootstrap_mm=finite(assessment.z0_bootstrap_mm) if assessment else None,
            warnings=list(assessment.warnings) if assessment else [],
            n_outliers=fit.n_outliers,
            object_distance_mm=finite(rel.object_distance_mm) if rel else None,
            k_thin_lens_px_per_mm=finite(rel.k_thin_lens_px_per_mm) if rel else None,
            f_number_fit=finite(rel.f_number_fit) if rel else None,
            coarse=coarse,
        )


class RejectedRoi(_Strict):
    """A region calibrate refused, kept so autofocus can say so instead of guessing."""

    name: str
    roi: Box | None = None
    reason: str


class Calibration(_Strict):
    """Everything needed to turn a blur into a stage distance on one instrument."""

    format: Literal["hdme-focus-calibration"] = FORMAT
    version: int = VERSION
    created: str = Field(
        default_factory=lambda: _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    )
    units: Units = Units()
    sweep: SweepSource
    estimator: str
    frame_size_px: tuple[int, int] | None = None  # width, height
    optics: OpticsRecord
    rois: list[RoiCalibration] = Field(min_length=1)
    rejected: list[RejectedRoi] = Field(default_factory=list)

    @field_validator("version")
    @classmethod
    def _known_version(cls, v: int) -> int:
        if v != VERSION:
            raise ValueError(f"version {v} is not supported (this hdme-focus reads {VERSION})")
        return v

    # -- summaries over regions
    @property
    def typical(self) -> RoiCalibration:
        """The region whose k lies nearest the median k: its whole curve is the summary.

        k, sigma0 and the saturation c depend on the texture together (c and k trade
        off in the fit), so medians taken one parameter at a time make a curve no
        region had: with compressed and plain fits mixed, a steep k from one region
        and no compression from another. Measured on the autofocus benchmark's
        calibrate-once protocol, single jump: 42 % with per-parameter medians, 50 %
        with this (hdme-lite-conf); 27 % and 28 % (hdme-lite).
        """
        med = float(np.median([r.k_px_per_mm for r in self.rois]))
        return min(self.rois, key=lambda r: abs(r.k_px_per_mm - med))

    @property
    def k_px_per_mm(self) -> float:
        return self.typical.k_px_per_mm

    @property
    def sigma0_px(self) -> float:
        return self.typical.sigma0_px

    @property
    def saturation_px(self) -> float | None:
        return self.typical.saturation_px

    @property
    def dof_mm(self) -> float:
        return 1.0 / self.k_px_per_mm

    def lens(self) -> ThinLens:
        return self.optics.lens()

    def slope_at_px_per_mm(self, focus_position_mm: ArrayLike) -> NDArray[np.float64]:
        """k for an object focused at a stage position, scaled by the thin lens.

        Image side k = D / (2 sqrt(2) p v) falls as 1/v with v = s0 + z, so k v is
        one aperture constant: the typical region's, scaled to where the object
        focuses; object side the change over a few mm of sample travel is
        negligible and the typical region's k is used.
        """
        z = np.asarray(focus_position_mm, dtype=np.float64)
        if self.optics.setup != "image":
            return np.full_like(z, self.k_px_per_mm)
        s0 = self.optics.sensor_distance_mm
        t = self.typical
        return np.asarray(t.k_px_per_mm * (s0 + t.z0_mm) / (s0 + z), dtype=np.float64)

    def roi_named(self, name: str) -> RoiCalibration:
        for r in self.rois:
            if r.name == name:
                return r
        raise KeyError(name)

    def texture_outside(self, sigma_px: float, contrast: float) -> str | None:
        """Why a region read with the global calibration has a texture it never saw, or None.

        A blur reading depends on the texture as well as on the defocus; the
        calibration has seen each fitted region's local contrast at every blur of
        its sweep. A region whose contrast, at the blur it reads, lies more than
        TEXTURE_COVERAGE_FACTOR from every fitted region's is outside what the
        global V-curve covers. Calibrations without contrast curves say nothing.
        """
        curves = [r.contrast_curve for r in self.rois if r.contrast_curve]
        if not curves or not (math.isfinite(sigma_px) and contrast > 0):
            return None
        seen: list[float] = []
        for curve in curves:
            s, c = np.asarray(curve, dtype=np.float64).T
            if s.min() <= sigma_px <= s.max():
                order = np.argsort(s)
                seen.append(float(np.exp(np.interp(sigma_px, s[order], np.log(c[order])))))
        if not seen:
            return None  # beyond every sweep's blur: the range checks speak for it
        lo, hi = min(seen), max(seen)
        if lo / TEXTURE_COVERAGE_FACTOR <= contrast <= hi * TEXTURE_COVERAGE_FACTOR:
            return None
        return (
            f"the region's texture is outside what the calibration covers (local contrast "
            f"{contrast:.4f} at {sigma_px:.1f} px blur; the calibrated regions had "
            f"{lo:.4f}-{hi:.4f}); calibrate this region"
        )

    def rejected_covering(self, roi: Box | None) -> RejectedRoi | None:
        """The refused region that covers `roi` more than any accepted one, if any."""
        if roi is None:
            return None
        region = Roi(*roi)
        best_ok = max((region.covered_by(r.roi) for r in self.rois if r.roi is not None), default=0)
        scored = [(region.covered_by(r.roi), r) for r in self.rejected if r.roi is not None]
        if not scored:
            return None
        frac, worst = max(scored, key=lambda t: t[0])
        return worst if frac > 0 and frac > best_ok else None

    def for_roi(self, roi: Box | None) -> tuple[RoiCalibration, float]:
        """The region calibration that best covers `roi`, and the covered fraction.

        With no overlap (fraction 0) a summary region is returned: the typical
        region's curve (k, sigma0, saturation; see `typical`), the median z0 and, as its
        standard error, the spread of z0 over the regions, since the new
        region's focus is then only known to lie somewhere among them.
        """
        if roi is not None:
            region = Roi(*roi)
            scored = [(region.covered_by(r.roi), r) for r in self.rois if r.roi is not None]
            if scored:
                frac, best = max(scored, key=lambda t: t[0])
                if frac > 0:
                    return best, frac
        z0s = np.asarray([r.z0_mm for r in self.rois])
        spread = float(z0s.max() - z0s.min()) / 2.0 if len(z0s) > 1 else 0.0
        summary = RoiCalibration(
            name=GLOBAL_REGION,
            roi=None,
            z0_mm=float(np.median(z0s)),
            k_px_per_mm=self.k_px_per_mm,
            sigma0_px=self.sigma0_px,
            saturation_px=self.saturation_px,
            dof_mm=self.dof_mm,
            z0_stderr_mm=max(spread, max(r.z0_stderr_mm for r in self.rois)),
            rmse_px=float(np.median([r.rmse_px for r in self.rois])),
            r2=float(np.min([r.r2 for r in self.rois])),
            n_points=sum(r.n_points for r in self.rois),
            n_outliers=sum(r.n_outliers for r in self.rois),
            range_mm=(
                min(r.range_mm[0] for r in self.rois),
                max(r.range_mm[1] for r in self.rois),
            ),
            sigma_range_px=(
                min(r.sigma_range_px[0] for r in self.rois if r.sigma_range_px),
                max(r.sigma_range_px[1] for r in self.rois if r.sigma_range_px),
            )
            if all(r.sigma_range_px for r in self.rois)
            else None,
        )
        return summary, 0.0

    # -- persistence
    def save(self, path: Path | str) -> Path:
        """Write atomically (a reader never sees half a file)."""
        return write_text_atomic(path, self.model_dump_json(indent=2) + "\n")

    # -- compatibility
    def mismatches(
        self,
        lens: ThinLens | None = None,
        frame_size_px: tuple[int, int] | None = None,
        estimator: str | None = None,
        rel_tol: float = 1e-3,
    ) -> list[str]:
        """Differences that make this calibration wrong for the given instrument."""
        out: list[str] = []
        if lens is not None:
            now = OpticsRecord.from_lens(lens)
            if now.setup != self.optics.setup:
                out.append(f"optics.setup is {now.setup!r} but was {self.optics.setup!r}")
            for key in ("focal_length_mm", "f_number", "pixel_pitch_um", "sensor_distance_mm"):
                a, b = getattr(now, key), getattr(self.optics, key)
                if abs(a - b) > rel_tol * abs(b):
                    out.append(f"optics.{key} is {a:g} but was {b:g}")
        if (
            frame_size_px is not None
            and self.frame_size_px is not None
            and tuple(frame_size_px) != tuple(self.frame_size_px)
        ):
            w, h = self.frame_size_px
            out.append(f"frames are {frame_size_px[0]}x{frame_size_px[1]} px but were {w}x{h}")
        if estimator is not None and estimator != self.estimator:
            out.append(f"the estimator is {estimator!r} but was {self.estimator!r}")
        return out

    def check_matches(
        self,
        source: Path | str,
        lens: ThinLens | None = None,
        frame_size_px: tuple[int, int] | None = None,
        estimator: str | None = None,
    ) -> Calibration:
        problems = self.mismatches(lens, frame_size_px, estimator)
        if problems:
            raise CalibrationFileError(
                f"{source}: calibration does not match this instrument ({'; '.join(problems)}); "
                f"{RECALIBRATE}"
            )
        return self


def _first_error(err: ValidationError) -> str:
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(file)"
    more = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{loc}: {first['msg']}{more}"


def load_calibration(path: Path | str) -> Calibration:
    """Read and validate a calibration file; CalibrationFileError with the fix otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CalibrationFileError(f"{path}: no calibration file there; {RECALIBRATE}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CalibrationFileError(f"{path}: not readable JSON ({exc}); {RECALIBRATE}") from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CalibrationFileError(
            f"{path}: not an hdme-focus calibration (format != {FORMAT!r}); {RECALIBRATE}"
        )
    try:
        return Calibration.model_validate(data)
    except ValidationError as exc:
        raise CalibrationFileError(
            f"{path}: invalid calibration: {_first_error(exc)}; {RECALIBRATE}"
        ) from exc


def build_calibration(
    fits: Sequence[tuple[str, Box | None, VCurveFit]],
    *,
    lens: ThinLens | None,
    sweep: SweepSource,
    estimator: str,
    frame_size_px: tuple[int, int] | None,
    coarse: dict[str, CoarseFit] | None = None,
    assessments: dict[str, FitAssessment] | None = None,
    rejected: Sequence[RejectedRoi] = (),
) -> Calibration:
    """Assemble checked fits into a Calibration (the caller checks quality first)."""
    if lens is None:
        raise ValueError("a calibration needs the optics it was made with")
    extra = coarse or {}
    checks = assessments or {}
    return Calibration(
        sweep=sweep,
        estimator=estimator,
        frame_size_px=frame_size_px,
        optics=OpticsRecord.from_lens(lens),
        rois=[
            RoiCalibration.from_fit(name, roi, fit, lens, extra.get(name), checks.get(name))
            for name, roi, fit in fits
        ],
        rejected=list(rejected),
    )


# --------------------------------------------------------------------------- reading errors

SCALE_ERROR = 0.15  # relative error of a blur reading on a scene other than the calibration's


def _sigma_error_px(sigma_px: float) -> float:
    """Typical error of a region's blur estimate: grows with the blur."""
    return 0.15 + 0.08 * sigma_px


def distance_error_mm(
    sigma_px: float, k_px_per_mm: float, sigma0_px: float, saturation_px: float | None = None
) -> float:
    """1-sigma error of |z - z0| read from a blur: noise near focus, scale error far from it.

    Noise: d = sqrt(sigma^2 - sigma0^2) / k, so dd/dsigma = sigma / (k^2 d) grows
    without bound as sigma approaches sigma0 (the excess is floored at one error
    step). Scale: an estimator that reads a scene's blur a few % high or low
    errs in proportion to d (SCALE_ERROR). A compressed reading (saturation c)
    is expanded first, its error with it: near c a small reading error is a
    large blur error; inf at or above c.
    """
    e = _sigma_error_px(sigma_px)
    if saturation_px is not None:
        if not sigma_px < saturation_px:
            return math.inf
        e *= (1.0 - (sigma_px / saturation_px) ** 2) ** -1.5  # d expand / d reading
        sigma_px = float(expand_px(sigma_px, saturation_px))
    excess = math.sqrt(max(sigma_px**2 - sigma0_px**2, 2.0 * sigma0_px * e + e * e))
    noise = e * max(sigma_px, sigma0_px + e) / (k_px_per_mm * excess)
    d = math.sqrt(max(sigma_px**2 - sigma0_px**2, 0.0)) / k_px_per_mm
    return math.hypot(noise, SCALE_ERROR * d)
