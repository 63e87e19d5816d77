"""Frame -> per-pixel defocus blur (sigma in px). Knows no hardware.

`load_estimator()` returns the shipped HDME-Net; `load_estimator("reblur")` a
classical baseline; both follow `base.DefocusEstimator`. Imported lazily so that
`hdme_focus.estimation.base` stays free of torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hdme_focus.estimation.estimator import HDMEEstimator, WeightsError, load_estimator

__all__ = ["HDMEEstimator", "WeightsError", "load_estimator"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from hdme_focus.estimation import estimator

        return getattr(estimator, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
