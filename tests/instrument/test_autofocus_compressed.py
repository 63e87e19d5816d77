"""Autofocus with an estimator whose reading compresses far from focus (as every one does)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from sim_oracle import OracleEstimator

from hdme_focus.calibration.fit import fit_vcurve
from hdme_focus.calibration.model import Calibration, SweepSource, build_calibration
from hdme_focus.config import CameraConfig, InstrumentConfig
from hdme_focus.core.roi import Roi
from hdme_focus.instrument.autofocus import HdmeOptions, autofocus_hdme
from hdme_focus.instrument.devices import Instrument, open_instrument
from hdme_focus.instrument.session import AutofocusRefused

SIZE = (192, 144)
SATURATION_PX = 9.0


class Compressing(OracleEstimator):
    """The truth read as t / sqrt(1 + (t / c)^2): linear near focus, topping out at c."""

    saturation_px = SATURATION_PX

    def predict(self, image: Any, bit_depth: int | None = None, **kw: Any) -> Any:
        t = super().predict(image, bit_depth).astype(np.float64)
        return (t / np.sqrt(1.0 + (t / self.saturation_px) ** 2)).astype(np.float32)


@pytest.fixture
def inst() -> Iterator[Instrument]:
    cfg = InstrumentConfig(camera=CameraConfig(width_px=SIZE[0], height_px=SIZE[1]))
    with open_instrument(cfg) as instrument:
        yield instrument


def _bench(inst: Instrument, compression: bool) -> tuple[Roi, float, Calibration]:
    """The background region calibrated on the compressed readings of a 0.3-2.7 mm sweep."""
    cam: Any = inst.camera
    box = cam.scene.regions["background"]
    x, y, w, h = box
    z = np.arange(0.3, 2.71, 0.05)
    truth = np.asarray([np.median(cam.true_sigma_px(float(p))[y : y + h, x : x + w]) for p in z])
    read = truth / np.sqrt(1.0 + (truth / SATURATION_PX) ** 2)
    fit = fit_vcurve(z, read, compression=compression)
    cal = build_calibration(
        [("background", box, fit)],
        lens=inst.config.optics.lens(),
        sweep=SweepSource(path="compressed", frames=len(z), range_mm=(0.3, 2.7)),
        estimator=OracleEstimator.name,
        frame_size_px=SIZE,
    )
    return Roi(*box), float(cam.focus_position_mm(box)), cal


def _from(inst: Instrument, position_mm: float) -> None:
    inst.stage.travel_to(position_mm)
    inst.stage.moves = 0


@pytest.mark.parametrize("offset_dof", [7.0, 9.0, 11.0])
def test_a_far_start_lands_in_focus_through_the_compressed_v_curve(
    inst: Instrument, offset_dof: float
) -> None:
    """The single jump from far out: the compressed curve expands the reading to the blur
    there is. A hyperbola fitted to the same sweep (the old calibration) bends its slope
    to the compressed arms and misses."""
    roi, z0, cal = _bench(inst, compression=True)
    curve = cal.for_roi(roi.as_tuple())[0]
    assert curve.saturation_px == pytest.approx(SATURATION_PX, rel=0.05)
    dof = curve.dof_mm
    est = Compressing(inst.camera, roi.as_tuple())  # type: ignore[arg-type]
    _from(inst, z0 + offset_dof * dof)
    result = autofocus_hdme(inst, roi, est, cal, HdmeOptions("prior"))
    assert abs(result.final_mm - z0) <= 0.5 * dof
    _, _, plain = _bench(inst, compression=False)
    _from(inst, z0 + offset_dof * dof)
    missed = autofocus_hdme(inst, roi, est, plain, HdmeOptions("prior"))
    assert abs(missed.final_mm - z0) > 0.5 * dof


def test_a_reading_at_the_saturation_is_refused_without_moving(inst: Instrument) -> None:
    """A reading the curve cannot place (at or above its saturation: any distance farther
    out reads the same) is refused, not turned into a number."""
    roi, z0, cal = _bench(inst, compression=True)
    dof = cal.for_roi(roi.as_tuple())[0].dof_mm

    class ReadsHigher(Compressing):
        saturation_px = 2.0 * SATURATION_PX  # this scene's texture saturates later

    est = ReadsHigher(inst.camera, roi.as_tuple())  # type: ignore[arg-type]
    start = z0 + 14 * dof
    _from(inst, start)
    with pytest.raises(AutofocusRefused, match="saturation of the calibrated reading"):
        autofocus_hdme(inst, roi, est, cal, HdmeOptions("prior"))
    assert inst.stage.position_mm() == pytest.approx(start)
    assert inst.stage.moves == 0
