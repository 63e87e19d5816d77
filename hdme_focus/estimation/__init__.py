"""Frame -> per-pixel defocus blur (sigma in px) and a confidence. Knows no hardware.

`load_estimator()` returns the default (shipped hdme-lite), `create_estimator(name)`
any name in `estimator_names()`; all follow `base.DefocusEstimator`. Torch is
imported only by the estimators that need it, so `base` and the classical
baselines work without it.
"""

from hdme_focus.estimation.base import DefocusEstimate, DefocusEstimator
from hdme_focus.estimation.registry import (
    DEFAULT_ESTIMATOR,
    create_estimator,
    estimator_names,
    load_estimator,
)

__all__ = [
    "DEFAULT_ESTIMATOR",
    "DefocusEstimate",
    "DefocusEstimator",
    "create_estimator",
    "estimator_names",
    "load_estimator",
]
