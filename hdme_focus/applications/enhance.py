"""Adaptive enhancement: unsharp masking where the frame is in focus, nothing elsewhere.

Sharpening a defocused region only amplifies its noise (there is no detail
left to bring out), so the gain is the in-focus weight of the defocus map:
out = I + amount * W * (I - G_r * I).
"""

from __future__ import annotations

import numpy as np

from hdme_focus.applications.focus_weight import in_focus_weight, per_pixel
from hdme_focus.core.errors import UsageError
from hdme_focus.core.frame import F32
from hdme_focus.render import blur_uniform


def enhance_in_focus(
    image01: F32,
    sigma_px: F32,
    *,
    amount: float = 1.0,
    radius_px: float = 1.5,
    in_focus_px: float | None = None,
    transition_px: float = 1.5,
) -> F32:
    """The frame sharpened by `amount` where the map says it is in focus."""
    if not (np.isfinite(amount) and amount >= 0):
        raise UsageError(f"amount {amount}: use a sharpening gain >= 0")
    if not (np.isfinite(radius_px) and radius_px > 0):
        raise UsageError(f"radius {radius_px} px: use a positive unsharp-mask radius")
    img = np.asarray(image01, dtype=np.float32)
    if img.shape[:2] != sigma_px.shape:
        raise UsageError(f"defocus map {sigma_px.shape} does not match the image {img.shape[:2]}")
    w = in_focus_weight(sigma_px, in_focus_px, transition_px)
    detail = img - blur_uniform(img, radius_px)
    return np.clip(img + amount * per_pixel(w, img) * detail, 0.0, 1.0).astype(np.float32)
