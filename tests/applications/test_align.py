"""ECC alignment: a frame that shifted and scaled is put back; an aligned sweep is left alone."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from hdme_focus.applications.align import align_stack, identity_alignment


def _zoom_shift(image: np.ndarray, scale: float, dx: float, dy: float) -> np.ndarray:
    h, w = image.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), 0.0, scale)
    m[:, 2] += (dx, dy)
    return cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)


def test_recovers_focus_breathing_and_drift(sim_sweep: Any) -> None:
    grays = sim_sweep.stack.grays01[3:6]  # three neighbouring frames, the middle is the reference
    moved = [_zoom_shift(grays[0], 1.03, 4.0, -3.0), grays[1], _zoom_shift(grays[2], 0.98, -2, 2)]
    alignment = align_stack(moved)
    assert alignment.reference_index == 1 and alignment.failed == ()
    scales = alignment.scales()
    assert abs(scales[0] - 1.03) < 0.005 and abs(scales[2] - 0.98) < 0.005
    m = 12  # ignore the reflected border
    for i in (0, 2):
        back = alignment.warp(i, moved[i])
        before = np.abs(moved[i] - grays[i])[m:-m, m:-m].mean()
        after = np.abs(back - grays[i])[m:-m, m:-m].mean()
        assert after < 0.25 * before, (i, before, after)


def test_a_still_sweep_stays_put(sim_sweep: Any) -> None:
    alignment = align_stack(sim_sweep.stack.grays01)
    for matrix in alignment.matrices:
        np.testing.assert_allclose(matrix[:, :2], np.eye(2), atol=0.004)
        assert np.abs(matrix[:, 2]).max() < 0.5  # px
    ident = identity_alignment(3)
    frame = sim_sweep.stack.images01[0]
    assert ident.warp(1, frame) is frame


def test_fuse_aligns_a_breathing_sweep_by_default(sim_sweep: Any) -> None:
    """Each frame 0.8 % more magnified than the last (focus breathing): fused edges stay single."""
    from hdme_focus.applications.fuse import fuse_stack
    from hdme_focus.applications.stack import FocusStack

    stack = sim_sweep.stack
    mid = len(stack) // 2
    frames = tuple(
        _zoom_shift(f, 1.0 + 0.008 * (i - mid), 0.0, 0.0) for i, f in enumerate(stack.images01)
    )
    breathing = FocusStack(frames, stack.sources)
    reference = fuse_stack(stack, "classical", align=False).fused01
    aligned = fuse_stack(breathing, "classical").fused01
    unaligned = fuse_stack(breathing, "classical", align=False).fused01
    m = 16  # the warped border is extrapolated
    err_aligned = np.abs(aligned - reference)[m:-m, m:-m].mean()
    err_unaligned = np.abs(unaligned - reference)[m:-m, m:-m].mean()
    assert err_aligned < 0.5 * err_unaligned, (err_aligned, err_unaligned)
