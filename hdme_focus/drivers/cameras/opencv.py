"""Cameras reached through OpenCV's VideoCapture: webcams, USB microscopes, files, URLs.

Backends differ in what they support, so every `set` is checked and read back
and `settings` records what the camera actually applied (a refused or altered
setting is logged, not silently assumed). Frames are gray (RGB with
`camera.color`, for the chroma direction cue), keep their 8- or 16-bit
depth, may be averaged over N reads, and carry exposure, gain, timestamp and
camera id.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from numpy.typing import NDArray

from hdme_focus.config import CameraConfig
from hdme_focus.core.frame import Frame
from hdme_focus.drivers.base import CameraError, Clock, RealClock

log = logging.getLogger(__name__)

V4L2_MANUAL_EXPOSURE = 1.0  # V4L2 exposure_auto menu: 1 = manual


@dataclass(frozen=True)
class AppliedSetting:
    """What was asked for and what the camera reports it is using (None: unknown)."""

    name: str
    requested: float
    applied: float | None
    accepted: bool

    @property
    def ok(self) -> bool:
        if not self.accepted or self.applied is None:
            return False
        return math.isclose(self.applied, self.requested, rel_tol=0.02, abs_tol=1e-6)

    def describe(self) -> str:
        shown = "unknown" if self.applied is None else f"{self.applied:g}"
        verdict = "ok" if self.ok else ("refused" if not self.accepted else "differs")
        return f"{self.name}: requested {self.requested:g}, applied {shown} ({verdict})"


def exposure_to_backend(exposure_ms: float, backend: str) -> float:
    """OpenCV's exposure units depend on the backend."""
    if backend == "V4L2":
        return exposure_ms * 10.0  # units of 100 us
    if backend in ("DSHOW", "MSMF"):
        return float(round(math.log2(exposure_ms / 1000.0)))  # log2 of seconds
    return exposure_ms


def exposure_from_backend(value: float, backend: str) -> float:
    if backend == "V4L2":
        return value / 10.0
    if backend in ("DSHOW", "MSMF"):
        return float(1000.0 * 2.0 ** float(value))
    return value


def to_gray(image: NDArray[Any]) -> NDArray[Any]:
    """Gray image of the same dtype (8 or 16 bit are kept)."""
    if image.ndim == 2:
        return image
    if image.ndim == 3 and image.shape[2] == 1:
        return image[:, :, 0]
    if image.ndim == 3 and image.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2GRAY if image.shape[2] == 3 else cv2.COLOR_BGRA2GRAY
        return np.asarray(cv2.cvtColor(image, code))
    raise CameraError(f"unexpected frame shape {image.shape} from the camera")


def to_rgb(image: NDArray[Any]) -> NDArray[Any]:
    """RGB image of the same dtype from OpenCV's BGR(A); gray frames stay gray."""
    if image.ndim == 3 and image.shape[2] in (3, 4):
        code = cv2.COLOR_BGR2RGB if image.shape[2] == 3 else cv2.COLOR_BGRA2RGB
        return np.asarray(cv2.cvtColor(image, code))
    return to_gray(image)


def average(images: list[NDArray[Any]]) -> NDArray[Any]:
    """Mean of N frames, rounded back to their integer dtype."""
    if len(images) == 1:
        return images[0]
    dtype = images[0].dtype
    mean = np.mean(np.stack(images).astype(np.float64), axis=0)
    if np.issubdtype(dtype, np.integer):
        return np.asarray(np.rint(mean).astype(dtype))
    return np.asarray(mean.astype(dtype))


class OpenCVCamera:
    """A VideoCapture source configured from `CameraConfig`; `device` is an index or path/URL."""

    def __init__(
        self,
        config: CameraConfig,
        *,
        clock: Clock | None = None,
        capture_factory: Callable[[int | str], Any] | None = None,
        read_retries: int = 3,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or RealClock()
        self.read_retries = read_retries
        dev = config.device.strip()
        source: int | str = int(dev) if dev.isdigit() else dev
        self.camera_id = f"opencv:{dev}"
        factory = capture_factory or cv2.VideoCapture
        try:
            self._cap = factory(source)
            opened = bool(self._cap.isOpened())
        except cv2.error as exc:
            raise CameraError(f"cannot open camera {dev!r}: {exc}") from None
        if not opened:
            raise CameraError(
                f"cannot open camera {dev!r}: no such device or it is in use "
                "(camera.device is an index such as 0, or a file path or stream URL)"
            )
        self.backend = self._backend_name()
        self.settings: dict[str, AppliedSetting] = {}
        self._warned_depth = False
        try:
            self._configure()
            for _ in range(config.warmup_frames):
                self._read()
        except BaseException:
            self.close()
            raise

    def _backend_name(self) -> str:
        try:
            return str(self._cap.getBackendName())
        except (cv2.error, AttributeError):
            return "unknown"

    def _apply(
        self,
        prop: int,
        name: str,
        requested: float,
        backend_value: float | None = None,
        from_backend: Callable[[float], float] = float,
    ) -> AppliedSetting:
        value = requested if backend_value is None else backend_value
        try:
            accepted = bool(self._cap.set(prop, value))
            raw = float(self._cap.get(prop))
        except cv2.error:
            accepted, raw = False, -1.0
        # backends answer 0 or -1 for properties they do not know
        applied = from_backend(raw) if accepted or raw not in (0.0, -1.0) else None
        setting = AppliedSetting(name, float(requested), applied, accepted)
        self.settings[name] = setting
        if not setting.ok:
            log.warning("camera %s (%s): %s", self.camera_id, self.backend, setting.describe())
        return setting

    def _configure(self) -> None:
        cfg, backend = self.config, self.backend
        self._apply(cv2.CAP_PROP_FRAME_WIDTH, "width_px", cfg.width_px)
        self._apply(cv2.CAP_PROP_FRAME_HEIGHT, "height_px", cfg.height_px)
        if cfg.bit_depth > 8:
            self._apply(cv2.CAP_PROP_CONVERT_RGB, "convert_rgb", 0.0)  # raw 16-bit where offered
        if backend == "V4L2":
            self._apply(cv2.CAP_PROP_AUTO_EXPOSURE, "auto_exposure", V4L2_MANUAL_EXPOSURE)
        self._apply(
            cv2.CAP_PROP_EXPOSURE,
            "exposure_ms",
            cfg.exposure_ms,
            exposure_to_backend(cfg.exposure_ms, backend),
            lambda v: exposure_from_backend(v, backend),
        )
        self._apply(cv2.CAP_PROP_GAIN, "gain", cfg.gain)

    def report(self) -> list[str]:
        """One line per setting: requested, applied, verdict."""
        return [s.describe() for s in self.settings.values()]

    def _read(self) -> NDArray[Any]:
        for _ in range(self.read_retries):
            try:
                if not self._cap.isOpened():
                    raise CameraError(f"camera {self.camera_id} is disconnected")
                ok, image = self._cap.read()
            except cv2.error as exc:
                raise CameraError(f"camera {self.camera_id} failed: {exc}") from None
            if ok and image is not None and image.size > 0:
                pixels = np.asarray(image)
                return to_rgb(pixels) if self.config.color else to_gray(pixels)
        raise CameraError(
            f"camera {self.camera_id} delivered no frame in {self.read_retries} tries "
            "(unplugged, used by another program, or the end of a video file)"
        )

    def _bit_depth(self, image: NDArray[Any]) -> int:
        if image.dtype == np.uint8:
            if self.config.bit_depth > 8 and not self._warned_depth:
                self._warned_depth = True
                log.warning(
                    "camera %s delivers 8-bit frames; camera.bit_depth = %d is not used",
                    self.camera_id,
                    self.config.bit_depth,
                )
            return 8
        return self.config.bit_depth if self.config.bit_depth > 8 else 16

    def capture(self) -> Frame:
        started_s = self.clock.monotonic()
        wall_s = time.time()
        n = self.config.average_frames
        image = average([self._read() for _ in range(n)])
        exposure = self.settings.get("exposure_ms")
        gain = self.settings.get("gain")
        return Frame(
            image=image,
            exposure_ms=exposure.applied
            if exposure and exposure.applied
            else self.config.exposure_ms,
            timestamp_s=started_s,
            bit_depth=self._bit_depth(image),
            meta={
                "camera": self.camera_id,
                "backend": self.backend,
                "gain": gain.applied if gain and gain.applied is not None else self.config.gain,
                "exposure_applied": bool(exposure and exposure.ok),
                "averaged_frames": n,
                "wall_time_s": wall_s,
            },
        )

    def close(self) -> None:
        cap = getattr(self, "_cap", None)
        if cap is not None:
            with contextlib.suppress(cv2.error):
                cap.release()
