"""Which side of focus, from one RGB frame: the axial chromatic aberration cue.

Blur is unsigned, but a lens whose red and blue focus at different depths
blurs one of them more on one side of focus and the other on the other side.
The cue is the signed relative blur of red against blue on a region: blur the
sharper channel by t until it matches the other (after a least-squares gain,
so colour contrast does not matter); the best t, signed +t when red is the
sharper channel and -t when blue is, is sqrt(|sigma_blue^2 - sigma_red^2|).
Matching whole patches reads the cue at any blur, where per-channel focus
measures flatten beyond a few pixels.

Which sign means "focus lies below" is a property of the lens and the stage,
so it is calibrated from a recorded sweep (`instrument/chroma_direction.py`),
never assumed. The cue abstains (`ChromaCue.speaks` False, with the reason)
when it is weak: a gray frame, channels that match unblurred (a corrected
lens, or JPEG's halved colour resolution), channels whose structure differs,
or a best match hardly better than the other sign's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from hdme_focus.core.frame import F32
from hdme_focus.render import blur_uniform

# relative blurs tried, px: fine near zero, coarser where the match is broad
RELATIVE_BLURS_PX: tuple[float, ...] = (
    0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 14.0,
)  # fmt: skip
CONTEXT_PX = 24  # frame around the region, so blurring does not read the crop's border
RED, BLUE = 0, 2


@dataclass(frozen=True)
class ChromaThresholds:
    """When the cue is too weak to choose a side on."""

    min_relative_blur_px: float = 1.0  # |t| below this: channels focused alike
    min_contrast: float = 1.25  # best other-sign residual / best residual
    max_residual: float = 0.5  # the channels' structures differ: not a blur difference


@dataclass(frozen=True)
class ChromaCue:
    """Signed relative blur of red vs blue on a region (+: red sharper), and whether it speaks."""

    relative_blur_px: float
    residual: float  # unexplained share of blue's (or red's) variance at the best match
    contrast: float  # other sign's best residual over the best: how decisive the sign is
    reason: str | None = None  # why it abstains; None when it speaks

    @property
    def speaks(self) -> bool:
        return self.reason is None

    @property
    def red_sharper(self) -> bool:
        return self.relative_blur_px > 0


def _residual(ref: F32, other: F32) -> float:
    """Share of `other`'s variance a gain times `ref` leaves unexplained (0..1)."""
    a = ref - ref.mean()
    b = other - other.mean()
    bb = float((b * b).sum())
    aa = float((a * a).sum())
    if bb <= 0.0:
        return 1.0
    if aa <= 0.0:
        return 1.0
    gain = float((a * b).sum()) / aa
    return float(((b - gain * a) ** 2).sum()) / bb


def chroma_cue(
    image: ArrayLike,
    roi: tuple[int, int, int, int],
    thresholds: ChromaThresholds | None = None,
) -> ChromaCue:
    """The red-vs-blue relative blur of region (x, y, w, h) of an HxWx3 (RGB) frame."""
    limits = thresholds or ChromaThresholds()
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] < 3:
        return ChromaCue(0.0, 1.0, 1.0, "the frame is gray: no colour to read a side from")
    x, y, w, h = roi
    height, width = img.shape[:2]
    x0, y0 = max(0, x - CONTEXT_PX), max(0, y - CONTEXT_PX)
    x1, y1 = min(width, x + w + CONTEXT_PX), min(height, y + h + CONTEXT_PX)
    red = np.asarray(img[y0:y1, x0:x1, RED], dtype=np.float32)
    blue = np.asarray(img[y0:y1, x0:x1, BLUE], dtype=np.float32)
    inner = (slice(y - y0, y - y0 + h), slice(x - x0, x - x0 + w))
    if np.array_equal(red, blue):
        return ChromaCue(0.0, 0.0, 1.0, "red and blue are identical: a gray scene or camera")
    if float(red[inner].std()) <= 0.0 or float(blue[inner].std()) <= 0.0:
        return ChromaCue(0.0, 1.0, 1.0, "red or blue has no texture in the region")
    res = {0.0: _residual(red[inner], blue[inner])}
    for t in RELATIVE_BLURS_PX:
        res[t] = _residual(blur_uniform(red, t)[inner], blue[inner])  # red sharper by t
        res[-t] = _residual(blur_uniform(blue, t)[inner], red[inner])  # blue sharper by t
    best = min(res, key=lambda t: res[t])
    other = min(v for t, v in res.items() if (t <= 0.0 if best > 0 else t >= 0.0))
    contrast = other / max(res[best], 1e-12)
    reason = None
    if res[best] > limits.max_residual:
        reason = (
            f"red and blue differ in structure, not blur (residual {res[best]:.2f} > "
            f"{limits.max_residual:.2f})"
        )
    elif abs(best) < limits.min_relative_blur_px:
        reason = (
            f"red and blue are blurred alike (relative blur {best:+.1f} px, below "
            f"{limits.min_relative_blur_px:.1f}): a corrected lens, compressed colour, or focus"
        )
    elif contrast < limits.min_contrast:
        reason = f"the sign is not decisive (contrast {contrast:.2f} < {limits.min_contrast:.2f})"
    return ChromaCue(float(best), float(res[best]), float(contrast), reason)
