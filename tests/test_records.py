"""Sweep records: what is written can be read back, damage is reported clearly."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hdme_focus.config import InstrumentConfig
from hdme_focus.core.frame import Frame
from hdme_focus.core.roi import Roi
from hdme_focus.records import (
    RecordError,
    SweepExistsError,
    SweepWriter,
    load_sweep,
    read_frame,
)

COLUMNS = ["index", "position_mm", "time_s", "frame", "A_lap_var", "A_sigma_px"]


def _frame(i: int) -> Frame:
    image = np.full((12, 16), 100 * i, dtype=np.uint16)
    return Frame(
        image=image,
        exposure_ms=5.0,
        timestamp_s=10.0 + i,
        position_mm=0.1 * i,
        bit_depth=12,
        meta={"gain": 2.0, "obj": object()},
    )


def _writer(out: Path, **kw: Any) -> SweepWriter:
    return SweepWriter(
        out,
        config=InstrumentConfig(),
        rois={"A": Roi(0, 0, 8, 8)},
        positions_mm=[0.0, 0.1, 0.2],
        columns=COLUMNS,
        **kw,
    )


def test_round_trip_complete_sweep(tmp_path: Path) -> None:
    w = _writer(tmp_path / "s").open()
    assert json.loads((tmp_path / "s" / "sweep.json").read_text())["status"] == "running"
    for i in range(3):
        w.write(_frame(i), time_s=0.5 * i, values={"A_lap_var": float(i)})  # sigma left out
    w.finish("complete")

    rec = load_sweep(tmp_path / "s")
    assert rec.status == "complete" and rec.reason is None
    assert rec.columns == tuple(COLUMNS)
    np.testing.assert_allclose(rec.positions_mm, [0.0, 0.1, 0.2])
    np.testing.assert_allclose(rec.time_s, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(rec.roi_values("A", "lap_var"), [0, 1, 2])
    assert np.all(np.isnan(rec.roi_values("A", "sigma_px")))  # declared, not yet filled
    assert rec.quantities("A") == ["lap_var", "sigma_px"]
    assert rec.rois == {"A": Roi(0, 0, 8, 8)}
    assert rec.config() == InstrumentConfig()
    frame = rec.read_frame(2)
    assert frame.image.dtype == np.uint16 and int(frame.image[0, 0]) == 200
    assert (frame.position_mm, frame.exposure_ms, frame.timestamp_s, frame.bit_depth) == (
        pytest.approx(0.2),
        5.0,
        12.0,
        12,
    )
    assert frame.meta == {"gain": 2.0}  # unserialisable metadata dropped, not fatal


def test_each_row_is_on_disk_when_write_returns(tmp_path: Path) -> None:
    w = _writer(tmp_path).open()
    w.write(_frame(0), 0.0, {"A_lap_var": 1.0})
    # the writer is still open (as during a sweep): a reader already sees the row
    rec = load_sweep(tmp_path)
    assert len(rec) == 1 and rec.status == "partial"
    assert "still being recorded by process" in (rec.reason or "")
    assert read_frame(rec.frame_paths[0]).position_mm == 0.0


def test_undeclared_column_is_refused(tmp_path: Path) -> None:
    w = _writer(tmp_path).open()
    with pytest.raises(ValueError, match="undeclared"):
        w.write(_frame(0), 0.0, {"B_lap_var": 1.0})


def test_existing_sweep_is_refused_unless_overwrite(tmp_path: Path) -> None:
    _writer(tmp_path).open().finish("complete")
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(SweepExistsError, match="already holds a sweep") as refused:
        _writer(tmp_path).open()
    assert refused.value.directory == tmp_path  # the CLI names --out and --overwrite with it
    w = _writer(tmp_path, overwrite=True).open()
    w.finish("partial", "test")
    assert (tmp_path / "notes.txt").read_text() == "keep me"
    assert load_sweep(tmp_path).reason == "test"


def test_torn_last_line_of_a_partial_sweep_is_dropped(tmp_path: Path) -> None:
    w = _writer(tmp_path).open()
    w.write(_frame(0), 0.0, {"A_lap_var": 1.0})
    w.finish("partial", "power cut")
    with open(tmp_path / "sweep.csv", "a") as fh:
        fh.write("1,0.1,0.5,frames/00001.t")
    assert len(load_sweep(tmp_path)) == 1


def _append(path: Path, text: str) -> None:
    with open(path, "a") as fh:
        fh.write(text)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda d: (d / "sweep.json").unlink(), "sweep.json: missing"),
        (lambda d: (d / "sweep.json").write_text("{not json"), "not a readable JSON"),
        (lambda d: (d / "sweep.csv").unlink(), "sweep.csv: missing"),
        (lambda d: (d / "frames" / "00000.tif").unlink(), "00000.tif: frame listed"),
        (lambda d: (d / "sweep.csv").write_text("index,position_mm\n"), "header does not match"),
        (
            lambda d: _append(d / "sweep.csv", "1,0.1,zero,frames/00000.tif,1,1\n"),
            "time_s = 'zero' is not a number",
        ),
        (lambda d: _append(d / "sweep.csv", "1,0.1\n"), "2 fields, expected 6"),
    ],
)
def test_damaged_records_raise_record_error(
    tmp_path: Path, damage: Callable[[Path], object], message: str
) -> None:
    w = _writer(tmp_path).open()
    w.write(_frame(0), 0.0, {"A_lap_var": 1.0})
    w.finish("partial", "stopped")
    damage(tmp_path)
    with pytest.raises(RecordError, match=message):
        load_sweep(tmp_path)


def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="no such sweep directory"):
        load_sweep(tmp_path / "nope")


def test_a_frame_write_that_dies_midway_leaves_no_torn_tiff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import tifffile

    def dies_midway(fh: Any, *args: Any, **kwargs: Any) -> None:
        fh.write(b"II*\x00 half a frame")
        raise OSError(28, "No space left on device")

    w = _writer(tmp_path).open()
    monkeypatch.setattr(tifffile, "imwrite", dies_midway)
    with pytest.raises(OSError, match="No space left"):
        w.write(_frame(0), 0.0, {"A_lap_var": 1.0})
    assert list((tmp_path / "frames").iterdir()) == []  # neither the frame nor a temp file
    monkeypatch.undo()
    assert w.write(_frame(1), 0.1, {"A_lap_var": 2.0}) == 0  # no row was counted
    w.finish("complete")
    assert read_frame(load_sweep(tmp_path).frame_paths[0]).exposure_ms == 5.0
