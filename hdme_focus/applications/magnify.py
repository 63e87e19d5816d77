"""Defocus magnification: a shallower depth of field from one frame and its defocus map.

The map becomes an in-focus weight W (`focus_weight`); the output fuses a
slightly sharpened image S where W is 1 with a blurred image B elsewhere:
out = W S + (1 - W) B (Galetto & Deng's SDoF). B adds blur that grows with
the blur already there (sigma_extra = strength * sigma), so what was far from
focus goes further; it is a normalised convolution that leaves the in-focus
pixels out (weights 1 - W), so a sharp foreground does not bleed into the
blurred background as a halo.
"""

from __future__ import annotations

import numpy as np

from hdme_focus.applications.focus_weight import in_focus_weight, per_pixel
from hdme_focus.core.errors import UsageError
from hdme_focus.core.frame import F32
from hdme_focus.render import blur_spatially_varying, blur_uniform

SHARPEN_RADIUS_PX = 1.0


def magnify_defocus(
    image01: F32,
    sigma_px: F32,
    *,
    strength: float = 1.5,
    in_focus_px: float | None = None,
    transition_px: float = 1.5,
    sharpen: float = 0.3,
) -> F32:
    """The frame with its out-of-focus parts blurred by strength x their own blur."""
    if not (np.isfinite(strength) and strength >= 0):
        raise UsageError(f"strength {strength}: use a factor >= 0 (0 leaves the blur as it is)")
    if not (np.isfinite(sharpen) and sharpen >= 0):
        raise UsageError(f"sharpen {sharpen}: use an amount >= 0")
    img = np.asarray(image01, dtype=np.float32)
    if img.shape[:2] != sigma_px.shape:
        raise UsageError(f"defocus map {sigma_px.shape} does not match the image {img.shape[:2]}")
    w = in_focus_weight(sigma_px, in_focus_px, transition_px)
    out_w = 1.0 - w
    extra = np.maximum(strength * np.asarray(sigma_px, np.float32), 0.0)
    num = blur_spatially_varying(img * per_pixel(out_w, img), extra)
    den = blur_spatially_varying(out_w, extra)
    blurred = np.where(per_pixel(den, img) > 1e-3, num / per_pixel(np.maximum(den, 1e-3), img), img)
    sharp = img + sharpen * (img - blur_uniform(img, SHARPEN_RADIUS_PX))
    out = per_pixel(w, img) * sharp + per_pixel(out_w, img) * blurred
    return np.asarray(np.clip(out, 0.0, 1.0), dtype=np.float32)
