"""Strict JSON out of result records: what other readers than Python's can parse."""

from __future__ import annotations

import json
import math

import numpy as np

from hdme_focus.core.atomic import json_safe


def test_nan_inf_and_numpy_scalars_become_strict_json() -> None:
    record = {
        "sigma_px": math.nan,
        "limits": (0.0, math.inf),
        1: [np.float32(1.5), np.int64(3), {"deep": -math.inf}],
        "name": "A",
    }
    text = json.dumps(json_safe(record), allow_nan=False)  # raises on any NaN left
    assert json.loads(text) == {
        "sigma_px": None,
        "limits": [0.0, None],
        "1": [1.5, 3, {"deep": None}],
        "name": "A",
    }
