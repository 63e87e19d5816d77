"""Frame -> per-pixel defocus blur (sigma in px) and a confidence. Knows no hardware.

`load_estimator()` returns the default (shipped hdme-lite), `create_estimator(name)`
any name in `estimator_names()`; all follow `base.DefocusEstimator`. Torch is
imported only by the estimators that need it, so `base` and the classical
baselines work without it.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hdme_focus.estimation.base import DefocusEstimate, DefocusEstimator
    from hdme_focus.estimation.registry import (
        DEFAULT_ESTIMATOR,
        create_estimator,
        estimator_names,
        load_estimator,
    )

# Resolved on first use: `hdme_focus.estimation.devices` (every command's --device
# option) then costs no numpy or OpenCV import.
_WHERE = {
    "DefocusEstimate": "base",
    "DefocusEstimator": "base",
    "DEFAULT_ESTIMATOR": "registry",
    "create_estimator": "registry",
    "estimator_names": "registry",
    "load_estimator": "registry",
}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_WHERE[name]}"), name)


__all__ = [
    "DEFAULT_ESTIMATOR",
    "DefocusEstimate",
    "DefocusEstimator",
    "create_estimator",
    "estimator_names",
    "load_estimator",
]
