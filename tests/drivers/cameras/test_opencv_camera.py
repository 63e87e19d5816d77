"""The OpenCV and GenICam camera layers, with the capture device mocked (and one real file)."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from pytest_mock import MockerFixture

from hdme_focus.config import CameraConfig, ConfigError
from hdme_focus.drivers.base import CameraError
from hdme_focus.drivers.cameras.genicam import GenICamCamera
from hdme_focus.drivers.cameras.opencv import OpenCVCamera


def fake_capture(
    mocker: MockerFixture,
    frames: list[Any] | None = None,
    refuse: tuple[int, ...] = (),
    backend: str = "V4L2",
) -> Any:
    """A VideoCapture double that stores what `set` accepted and serves `frames` in turn."""
    cap = mocker.MagicMock(name="VideoCapture")
    props: dict[int, float] = {}

    def set_(prop: int, value: float) -> bool:
        if prop in refuse:
            return False
        props[prop] = float(value)
        return True

    cap.set.side_effect = set_
    cap.get.side_effect = lambda prop: props.get(prop, -1.0)
    cap.isOpened.return_value = True
    cap.getBackendName.return_value = backend
    images = frames if frames is not None else [np.full((48, 64, 3), 100, np.uint8)]
    state = {"i": 0}

    def read() -> tuple[bool, Any]:
        img = images[state["i"] % len(images)]
        state["i"] += 1
        return (img is not None), img

    cap.read.side_effect = read
    return cap


def camera(cap: Any, **cfg: Any) -> OpenCVCamera:
    fields: dict[str, Any] = {"driver": "opencv", "width_px": 64, "height_px": 48}
    return OpenCVCamera(CameraConfig(**(fields | cfg)), capture_factory=lambda _src: cap)


def test_settings_are_set_read_back_and_frames_carry_metadata(mocker: MockerFixture) -> None:
    cap = fake_capture(mocker)
    cam = camera(cap, exposure_ms=10.0, gain=2.0, warmup_frames=2)
    cap.set.assert_any_call(cv2.CAP_PROP_EXPOSURE, 100.0)  # V4L2 counts in 100 us
    assert all(s.ok for s in cam.settings.values()), cam.report()
    assert cap.read.call_count == 2  # warm-up frames were read and dropped
    frame = cam.capture()
    assert frame.image.shape == (48, 64) and frame.image.dtype == np.uint8
    assert frame.bit_depth == 8
    assert frame.exposure_ms == pytest.approx(10.0)
    assert frame.meta["camera"] == "opencv:0" and frame.meta["gain"] == 2.0
    assert frame.meta["exposure_applied"] is True


def test_color_keeps_rgb_frames_for_the_chroma_cue(mocker: MockerFixture) -> None:
    """OpenCV delivers BGR; with camera.color the frame is RGB (red first), else gray."""
    bgr = np.zeros((48, 64, 3), np.uint16)
    bgr[..., 2] = 4000  # red in OpenCV's order
    colour = camera(fake_capture(mocker, [bgr]), color=True, bit_depth=12).capture()
    assert colour.image.shape == (48, 64, 3) and colour.image.dtype == np.uint16
    assert int(colour.image[0, 0, 0]) == 4000 and int(colour.image[0, 0, 2]) == 0
    gray = camera(fake_capture(mocker, [bgr]), bit_depth=12).capture()
    assert gray.image.shape == (48, 64)


def test_failed_set_is_reported_not_assumed(
    mocker: MockerFixture, caplog: pytest.LogCaptureFixture
) -> None:
    cap = fake_capture(mocker, refuse=(cv2.CAP_PROP_EXPOSURE, cv2.CAP_PROP_GAIN))
    with caplog.at_level(logging.WARNING):
        cam = camera(cap, exposure_ms=20.0)
    assert not cam.settings["exposure_ms"].accepted
    assert cam.settings["exposure_ms"].applied is None
    assert "exposure_ms: requested 20, applied unknown (refused)" in cam.report()
    assert "exposure_ms" in caplog.text
    frame = cam.capture()
    assert frame.meta["exposure_applied"] is False


def test_camera_that_applies_another_resolution_is_reported(mocker: MockerFixture) -> None:
    cap = fake_capture(mocker)
    cap.get.side_effect = lambda prop: 640.0 if prop == cv2.CAP_PROP_FRAME_WIDTH else 1.0
    cam = camera(cap)
    width = cam.settings["width_px"]
    assert width.accepted and not width.ok and width.applied == 640.0
    assert "width_px: requested 64, applied 640 (differs)" in cam.report()


def test_no_frames_is_a_camera_error(mocker: MockerFixture) -> None:
    cap = fake_capture(mocker, frames=[None])
    with pytest.raises(CameraError, match="no frame in 3 tries"):
        camera(cap, warmup_frames=1)
    cap.release.assert_called_once()  # a failed open does not leak the device
    cam = camera(fake_capture(mocker, frames=[None]), warmup_frames=0)
    with pytest.raises(CameraError, match="no frame"):
        cam.capture()


def test_disconnect_is_a_camera_error(mocker: MockerFixture) -> None:
    cap = fake_capture(mocker)
    cam = camera(cap, warmup_frames=0)
    cam.capture()
    cap.isOpened.return_value = False
    with pytest.raises(CameraError, match="disconnected"):
        cam.capture()


def test_device_that_does_not_open(mocker: MockerFixture) -> None:
    cap = fake_capture(mocker)
    cap.isOpened.return_value = False
    with pytest.raises(CameraError, match="cannot open camera '0'"):
        camera(cap)


def test_averaging_keeps_16_bit(mocker: MockerFixture) -> None:
    frames = [np.full((48, 64), 1000, np.uint16), np.full((48, 64), 1003, np.uint16)]
    cam = camera(fake_capture(mocker, frames=frames), warmup_frames=0, average_frames=2,
                 bit_depth=12)  # fmt: skip
    frame = cam.capture()
    assert frame.image.dtype == np.uint16
    assert int(frame.image[0, 0]) == 1002  # rint(1001.5)
    assert frame.bit_depth == 12 and frame.meta["averaged_frames"] == 2


def test_a_real_video_file_works_as_a_camera(tmp_path: Path) -> None:
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10, (64, 48))
    for i in range(4):
        writer.write(np.full((48, 64, 3), 50 * i, np.uint8))
    writer.release()
    cam = OpenCVCamera(
        CameraConfig(driver="opencv", device=str(path), width_px=32, height_px=48, warmup_frames=1)
    )
    frame = cam.capture()
    assert frame.image.shape == (48, 64)  # the file's size, not the refused request
    assert not cam.settings["width_px"].ok
    assert abs(float(frame.image.mean()) - 50) < 5
    cam.close()


# --------------------------------------------------------------------------- GenICam


def fake_harvester(mocker: MockerFixture, image: np.ndarray) -> Any:
    h = mocker.MagicMock(name="Harvester")
    h.device_info_list = ["cam0"]
    ia = h.create.return_value
    buffer = mocker.MagicMock()
    comp = buffer.__enter__.return_value.payload.components[0]
    comp.data, comp.height, comp.width = image.ravel(), image.shape[0], image.shape[1]
    ia.fetch.return_value = buffer
    return h


def test_genicam_without_harvesters_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setitem(sys.modules, "harvesters", None)
    monkeypatch.setitem(sys.modules, "harvesters.core", None)
    with pytest.raises(CameraError, match=r"hdme-focus\[genicam\]"):
        GenICamCamera(CameraConfig(driver="genicam", cti_file=tmp_path / "x.cti"))


def test_genicam_needs_a_gentl_producer(mocker: MockerFixture, tmp_path: Path) -> None:
    h = fake_harvester(mocker, np.zeros((48, 64), np.uint16))
    with pytest.raises(ConfigError, match="cti_file"):
        GenICamCamera(
            CameraConfig(driver="genicam", cti_file=tmp_path / "missing.cti"),
            harvester_factory=lambda: h,
        )


def test_genicam_frames_and_settings(mocker: MockerFixture, tmp_path: Path) -> None:
    cti = tmp_path / "producer.cti"
    cti.write_bytes(b"")
    h = fake_harvester(mocker, np.full((48, 64), 3000, np.uint16))
    cfg = CameraConfig(driver="genicam", cti_file=cti, width_px=64, height_px=48,
                       exposure_ms=5.0, bit_depth=12, warmup_frames=1)  # fmt: skip
    cam = GenICamCamera(cfg, harvester_factory=lambda: h)
    h.add_file.assert_called_once_with(str(cti))
    node_map = h.create.return_value.remote_device.node_map
    assert node_map.ExposureTime.value == 5000.0 and node_map.PixelFormat.value == "Mono12"
    frame = cam.capture()
    assert frame.image.shape == (48, 64) and frame.image.dtype == np.uint16
    assert frame.bit_depth == 12 and frame.exposure_ms == pytest.approx(5.0)
    cam.close()
    h.create.return_value.destroy.assert_called_once()
