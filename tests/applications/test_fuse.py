"""`fuse` on a simulated sweep: sharper than any frame everywhere, depth in the right order."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from hdme_focus.applications.fuse import fuse_stack
from hdme_focus.applications.stack import FocusStack, StackError
from hdme_focus.core.errors import UsageError
from hdme_focus.core.roi import Roi
from hdme_focus.estimation import load_estimator
from hdme_focus.focus_measures import focus_measures


def _sharpness(image: np.ndarray, roi: Roi) -> float:
    gray = image if image.ndim == 2 else image.mean(axis=2)
    return focus_measures(gray.astype(np.float32), roi, ["lap_var"])["lap_var"]


@pytest.fixture(scope="module")
def fused_hdme(sim_sweep: Any) -> Any:
    return fuse_stack(sim_sweep.stack, "hdme", load_estimator("focus-measure"), align=False)


def test_fused_is_as_sharp_as_the_sharpest_frame_in_every_region(
    sim_sweep: Any, fused_hdme: Any
) -> None:
    result = fused_hdme
    frames = sim_sweep.stack.images01
    for name, box in sim_sweep.camera.scene.regions.items():
        roi = Roi(*box)
        per_frame = [_sharpness(f, roi) for f in frames]
        fused = _sharpness(result.fused01, roi)
        best = int(np.argmax(per_frame))
        # no frame is sharper here (within 5 %), and every other frame is less sharp
        assert fused >= 0.95 * per_frame[best], (name, fused, per_frame)
        others = [v for i, v in enumerate(per_frame) if i != best]
        assert fused > max(others), (name, fused, per_frame)


def test_fused_is_closer_to_the_sharp_scene_than_any_frame(sim_sweep: Any, fused_hdme: Any) -> None:
    cam = sim_sweep.camera
    scale = cam.config.exposure_ms * cam.config.photon_flux_e_per_ms / cam.config.full_well_e
    from hdme_focus.render import Layer, composite_layers

    truth = scale * composite_layers(
        [
            Layer(layer.radiance, layer.alpha, np.zeros_like(layer.alpha))
            for layer in cam.scene.layers
        ]
    )
    mse = [float(np.mean((f - truth) ** 2)) for f in sim_sweep.stack.images01]
    fused_mse = float(np.mean((fused_hdme.fused01 - truth) ** 2))
    assert fused_mse < 0.5 * min(mse)  # > 3 dB better than the best single frame


def test_depth_from_focus_orders_the_layers(sim_sweep: Any, fused_hdme: Any) -> None:
    cam = sim_sweep.camera
    assert fused_hdme.depth_position_mm is not None
    depth = {}
    for name, box in cam.scene.regions.items():
        roi = Roi(*box)
        depth[name] = float(np.median(roi.slice(fused_hdme.depth_position_mm)))
        assert abs(depth[name] - cam.focus_position_mm(box)) < 0.1, (name, depth)
        index = float(np.median(roi.slice(fused_hdme.depth_index)))
        assert np.interp(index, range(8), sim_sweep.stack.positions_mm) == pytest.approx(
            depth[name], abs=0.05
        )
    # background (1300 mm) < M (1150) < D (1000) < H (900 mm): nearer objects focus farther out
    assert depth["background"] < depth["M"] < depth["D"] < depth["H"]
    conf = fused_hdme.confidence
    assert conf.shape == depth_shape(sim_sweep) and conf.min() >= 0.0 and conf.max() <= 1.0


def depth_shape(sweep: Any) -> tuple[int, ...]:
    return sweep.stack.images01[0].shape[:2]


def test_classical_depth_orders_the_layers(sim_sweep: Any) -> None:
    result = fuse_stack(sim_sweep.stack, "classical", align=False)
    regions = sim_sweep.camera.scene.regions
    assert result.depth_position_mm is not None
    d = {n: float(np.median(Roi(*b).slice(result.depth_position_mm))) for n, b in regions.items()}
    assert d["background"] < d["M"] < d["D"] < d["H"]


def test_without_positions_depth_is_the_frame_index(sim_sweep: Any) -> None:
    stack = FocusStack(sim_sweep.stack.images01[:3], sim_sweep.stack.sources[:3])
    result = fuse_stack(stack, "classical", align=False)
    assert result.depth_position_mm is None
    assert result.depth_index.min() >= 0.0 and result.depth_index.max() <= 2.0


def test_colour_frames_fuse_in_colour(sim_sweep: Any) -> None:
    frames = tuple(np.stack([f, 0.5 * f, f], axis=-1) for f in sim_sweep.stack.images01[:4])
    result = fuse_stack(FocusStack(frames, sim_sweep.stack.sources[:4]), "classical", align=False)
    assert result.fused01.shape == frames[0].shape
    np.testing.assert_allclose(result.fused01[..., 1], 0.5 * result.fused01[..., 0], atol=0.02)


def test_bad_stacks_and_options_are_refused(sim_sweep: Any) -> None:
    frames = sim_sweep.stack.images01
    with pytest.raises(StackError, match="at least 2 frames"):
        FocusStack(frames[:1], ("a",))
    with pytest.raises(StackError, match="same size"):
        FocusStack((frames[0], frames[1][:-1]), ("a", "b"))
    with pytest.raises(UsageError, match="choose one of hdme, classical"):
        fuse_stack(sim_sweep.stack, "median")
    with pytest.raises(UsageError, match="needs an estimator"):
        fuse_stack(sim_sweep.stack, "hdme")
