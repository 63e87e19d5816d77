"""From a defocus map to "how much is this pixel in focus": the step magnify and enhance share.

A smooth non-linear transform (as the reference code's NLT): 1 up to the
in-focus limit, 0 beyond it plus the transition, a smoothstep in between, so
the effect has no hard seam where the map crosses the limit. The default limit
is read off the map itself (its sharpest 5 % plus AUTO_MARGIN_PX): estimators
read an in-focus region at 0.5-2 px depending on texture and noise, so a fixed
1 px would soften the subject with one estimator and not with another.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from hdme_focus.core.errors import UsageError
from hdme_focus.core.frame import F32

AUTO_PERCENTILE = 5.0
AUTO_MARGIN_PX = 0.5


def auto_in_focus_px(sigma_px: ArrayLike) -> float:
    """The in-focus limit when none is given: the map's sharpest 5 %, plus a margin."""
    return float(np.percentile(np.asarray(sigma_px), AUTO_PERCENTILE)) + AUTO_MARGIN_PX


def in_focus_weight(
    sigma_px: ArrayLike, in_focus_px: float | None = None, transition_px: float = 1.5
) -> F32:
    """1 where sigma <= in_focus_px (default: `auto_in_focus_px`), 0 beyond + transition_px."""
    if in_focus_px is None:
        in_focus_px = auto_in_focus_px(sigma_px)
    if not (np.isfinite(in_focus_px) and in_focus_px >= 0):
        raise UsageError(f"in-focus range {in_focus_px} px: use a blur sigma >= 0 px")
    if not (np.isfinite(transition_px) and transition_px > 0):
        raise UsageError(f"transition {transition_px} px: use a positive width in px")
    t = np.clip((np.asarray(sigma_px, np.float32) - in_focus_px) / transition_px, 0.0, 1.0)
    return np.asarray(1.0 - t * t * (3.0 - 2.0 * t), dtype=np.float32)


def per_pixel(weight: F32, image: F32) -> F32:
    """A HxW weight shaped to multiply a HxW or HxWxC image."""
    return weight[..., None] if image.ndim == 3 else weight
