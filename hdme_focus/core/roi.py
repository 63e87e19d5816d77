"""Regions of interest: parsing and validating "X,Y,W,H" against a frame.

Bottom layer (no imports from the rest of the package) so the CLI, the sweep,
the estimators and autofocus all read an ROI the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from numpy.typing import NDArray

from hdme_focus.core.errors import UsageError


class RoiError(UsageError):
    """A user-supplied ROI that cannot be used; str() names the value and the fix."""


@dataclass(frozen=True)
class Roi:
    """Axis-aligned rectangle in pixels: top-left corner (x, y), width w, height h."""

    x: int
    y: int
    w: int
    h: int

    def __post_init__(self) -> None:
        for name in ("x", "y", "w", "h"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise RoiError(f"ROI {name} = {value!r}: must be an integer number of pixels")
        if self.w <= 0 or self.h <= 0:
            raise RoiError(
                f"ROI {self.spec}: zero or negative area; width and height must be >= 1 px"
            )
        if self.x < 0 or self.y < 0:
            raise RoiError(f"ROI {self.spec}: x and y must be >= 0 (top-left corner of the frame)")

    @property
    def spec(self) -> str:
        """The "X,Y,W,H" form the command line accepts."""
        return f"{self.x},{self.y},{self.w},{self.h}"

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)

    @property
    def centre_px(self) -> tuple[float, float]:
        return (self.x + self.w / 2.0, self.y + self.h / 2.0)

    def check_inside(self, width_px: int, height_px: int) -> Roi:
        """Raise RoiError unless the whole ROI lies inside a width x height frame."""
        if self.x + self.w > width_px or self.y + self.h > height_px:
            raise RoiError(
                f"ROI {self.spec} reaches ({self.x + self.w}, {self.y + self.h}), outside the "
                f"{width_px}x{height_px} frame; use x + w <= {width_px} and y + h <= {height_px}"
            )
        return self

    def covered_by(self, other: Roi | Sequence[int]) -> float:
        """Share of this ROI's area that `other` (a Roi or x, y, w, h) covers, 0..1."""
        bx, by, bw, bh = other.as_tuple() if isinstance(other, Roi) else (int(v) for v in other)
        w = max(0, min(self.x + self.w, bx + bw) - max(self.x, bx))
        h = max(0, min(self.y + self.h, by + bh) - max(self.y, by))
        return (w * h) / float(self.w * self.h)

    def slice(self, image: NDArray[Any]) -> NDArray[Any]:
        """The ROI's pixels (a view); works for gray HxW and colour HxWxC."""
        return image[self.y : self.y + self.h, self.x : self.x + self.w]

    @classmethod
    def centre_quarter(cls, width_px: int, height_px: int) -> Roi:
        """Centred ROI of half the width and half the height (a quarter of the area)."""
        w, h = max(1, width_px // 2), max(1, height_px // 2)
        return cls((width_px - w) // 2, (height_px - h) // 2, w, h)


def parse_roi(text: str) -> Roi:
    """Parse "X,Y,W,H" (integers, pixels); RoiError with the fix when malformed."""
    parts = [p.strip() for p in str(text).split(",")]
    if len(parts) != 4:
        raise RoiError(
            f"ROI {text!r}: expected 4 comma-separated integers X,Y,W,H (e.g. 100,80,64,64)"
        )
    try:
        x, y, w, h = (int(p) for p in parts)
    except ValueError:
        raise RoiError(
            f"ROI {text!r}: expected 4 comma-separated integers X,Y,W,H (e.g. 100,80,64,64)"
        ) from None
    return Roi(x, y, w, h)
