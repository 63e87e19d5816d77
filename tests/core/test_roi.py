"""ROI parsing and validation: every bad ROI is one RoiError naming the value and the fix."""

from __future__ import annotations

import numpy as np
import pytest

from hdme_focus.core.roi import Roi, RoiError, parse_roi


def test_parse_roi_reads_x_y_w_h() -> None:
    assert parse_roi("10, 20,30,40") == Roi(10, 20, 30, 40)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("1,2,3", "4 comma-separated integers"),
        ("1,2,3,4,5", "4 comma-separated integers"),
        ("a,b,c,d", "4 comma-separated integers"),
        ("1.5,2,3,4", "4 comma-separated integers"),
        ("", "4 comma-separated integers"),
        ("0,0,0,10", "zero or negative area"),
        ("0,0,10,-1", "zero or negative area"),
        ("-1,0,10,10", "x and y must be >= 0"),
    ],
)
def test_bad_roi_text_is_one_line_with_the_value(text: str, fragment: str) -> None:
    with pytest.raises(RoiError) as info:
        parse_roi(text)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message
    assert isinstance(info.value, ValueError)


def test_roi_outside_frame_names_frame_and_fix() -> None:
    roi = parse_roi("100,50,64,64")
    with pytest.raises(RoiError, match=r"outside the 160x100 frame.*x \+ w <= 160"):
        roi.check_inside(160, 100)
    assert roi.check_inside(164, 114) is roi  # exactly touching the edge is inside


def test_slice_takes_rows_y_and_columns_x() -> None:
    image = np.arange(12 * 10).reshape(12, 10)
    patch = Roi(2, 3, 4, 5).slice(image)
    assert patch.shape == (5, 4)
    assert patch[0, 0] == image[3, 2]
    assert Roi(0, 0, 2, 2).slice(np.zeros((4, 4, 3))).shape == (2, 2, 3)


def test_centre_quarter_is_centred_and_inside() -> None:
    roi = Roi.centre_quarter(160, 120)
    assert roi == Roi(40, 30, 80, 60)
    roi.check_inside(160, 120)
