"""Atomic writers: a result file appears whole, with the mode a new file gets, or not at all."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import tifffile

from hdme_focus.core.atomic import (
    write_json_atomic,
    write_png_atomic,
    write_text_atomic,
    write_tiff_atomic,
)


def test_a_result_file_gets_the_mode_of_any_new_file_not_owner_only(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = write_text_atomic(tmp_path / "out.txt", "x\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "cal.json"
    write_json_atomic(path, {"v": 1})

    class Boom(Exception):
        pass

    with pytest.raises(Boom):
        from hdme_focus.core.atomic import atomic_write

        def half(fh: object) -> None:
            fh.write(b'{"v": 2, "trunc')  # type: ignore[attr-defined]
            raise Boom

        atomic_write(path, half)
    assert path.read_text() == '{\n  "v": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal.json"]


def test_images_round_trip(tmp_path: Path) -> None:
    import cv2

    img = (np.arange(12 * 10, dtype=np.uint16).reshape(12, 10) * 300).astype(np.uint16)
    tif = write_tiff_atomic(tmp_path / "a.tiff", img, {"position_mm": 1.5})
    with tifffile.TiffFile(tif) as t:
        np.testing.assert_array_equal(t.asarray(), img)
        assert t.shaped_metadata is not None and t.shaped_metadata[0]["position_mm"] == 1.5
    png = write_png_atomic(tmp_path / "a.png", img)
    np.testing.assert_array_equal(cv2.imread(str(png), cv2.IMREAD_UNCHANGED), img)
