"""GenICam (GigE Vision / USB3 Vision) cameras through harvesters, an optional extra.

harvesters is imported only when this driver is configured
(`pip install 'hdme-focus[genicam]'`), and it needs the camera vendor's GenTL
producer (.cti file). Each node write is read back into `settings`, as with
the OpenCV camera.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from hdme_focus.config import CameraConfig, ConfigError
from hdme_focus.core.frame import Frame
from hdme_focus.drivers.base import CameraError, Clock, RealClock
from hdme_focus.drivers.cameras.opencv import AppliedSetting, average

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'hdme-focus[genicam]'"


def find_cti(cti_file: Path | None) -> Path:
    """The configured GenTL producer, else the first .cti on $GENICAM_GENTL64_PATH."""
    if cti_file is not None:
        if not Path(cti_file).is_file():
            raise ConfigError(f"camera.cti_file = {str(cti_file)!r}: no such file")
        return Path(cti_file)
    for folder in os.environ.get("GENICAM_GENTL64_PATH", "").split(os.pathsep):
        if folder and Path(folder).is_dir():
            found = sorted(Path(folder).glob("*.cti"))
            if found:
                return found[0]
    raise ConfigError(
        "camera.cti_file is not set and $GENICAM_GENTL64_PATH has no .cti file: point "
        "camera.cti_file at your camera vendor's GenTL producer"
    )


def _load_harvester() -> Callable[[], Any]:
    try:
        from harvesters.core import Harvester
    except ImportError:
        raise CameraError(f"camera.driver = 'genicam' needs harvesters: {INSTALL_HINT}") from None
    factory: Callable[[], Any] = Harvester
    return factory


class GenICamCamera:
    """One GenICam camera: `device` is an index ("0") or a serial number."""

    def __init__(
        self,
        config: CameraConfig,
        *,
        clock: Clock | None = None,
        harvester_factory: Callable[[], Any] | None = None,
        fetch_timeout_s: float = 3.0,
    ) -> None:
        self.config = config
        self.clock: Clock = clock or RealClock()
        self.fetch_timeout_s = fetch_timeout_s
        self.settings: dict[str, AppliedSetting] = {}
        self._ia: Any = None
        factory = harvester_factory or _load_harvester()
        cti = find_cti(config.cti_file)
        self._h = factory()
        try:
            self._h.add_file(str(cti))
            self._h.update()
            if not self._h.device_info_list:
                raise CameraError(f"no GenICam camera found through {cti}")
            dev = config.device.strip()
            self.camera_id = f"genicam:{dev}"
            self._ia = self._create(dev)
            self._configure()
            start = getattr(self._ia, "start", None) or self._ia.start_acquisition
            start()
            for _ in range(config.warmup_frames):
                self._read()
        except BaseException:
            self.close()
            raise

    def _create(self, dev: str) -> Any:
        h = self._h
        try:
            if hasattr(h, "create"):  # harvesters >= 1.3
                return h.create(int(dev) if dev.isdigit() else {"serial_number": dev})
            if dev.isdigit():
                return h.create_image_acquirer(list_index=int(dev))
            return h.create_image_acquirer(serial_number=dev)
        except Exception as exc:  # harvesters raises its own and GenTL exception types
            raise CameraError(f"cannot open GenICam camera {dev!r}: {exc}") from None

    def _set(self, node: str, name: str, value: Any, requested: float | None = None) -> None:
        node_map = self._ia.remote_device.node_map
        try:
            feature = getattr(node_map, node)
            feature.value = value
            applied: Any = feature.value
            accepted = True
        except Exception as exc:  # GenApi raises for missing, read-only or out-of-range nodes
            log.warning("camera %s: could not set %s = %r (%s)", self.camera_id, node, value, exc)
            applied, accepted = None, False
        if requested is not None:
            num = float(applied) if isinstance(applied, (int, float)) else None
            setting = AppliedSetting(name, requested, num, accepted)
            self.settings[name] = setting
            if not setting.ok:
                log.warning("camera %s: %s", self.camera_id, setting.describe())

    def _configure(self) -> None:
        cfg = self.config
        self._set("PixelFormat", "pixel_format", f"Mono{cfg.bit_depth}")
        self._set("Width", "width_px", cfg.width_px, cfg.width_px)
        self._set("Height", "height_px", cfg.height_px, cfg.height_px)
        self._set("ExposureAuto", "exposure_auto", "Off")
        self._set("ExposureTime", "exposure_us", cfg.exposure_ms * 1000.0, cfg.exposure_ms * 1000)
        self._set("GainAuto", "gain_auto", "Off")
        self._set("Gain", "gain", cfg.gain, cfg.gain)

    def _read(self) -> NDArray[Any]:
        fetch = getattr(self._ia, "fetch", None) or self._ia.fetch_buffer
        try:
            with fetch(timeout=self.fetch_timeout_s) as buffer:
                comp = buffer.payload.components[0]
                return np.array(comp.data, copy=True).reshape(comp.height, comp.width)
        except CameraError:
            raise
        except Exception as exc:  # timeouts and transport errors from GenTL
            raise CameraError(
                f"camera {self.camera_id} delivered no frame within {self.fetch_timeout_s:g} s "
                f"({exc}); check the cable, trigger mode and bandwidth"
            ) from None

    def report(self) -> list[str]:
        return [s.describe() for s in self.settings.values()]

    def capture(self) -> Frame:
        started_s = self.clock.monotonic()
        wall_s = time.time()
        image = average([self._read() for _ in range(self.config.average_frames)])
        exposure = self.settings.get("exposure_us")
        gain = self.settings.get("gain")
        depth = 8 if image.dtype == np.uint8 else self.config.bit_depth
        return Frame(
            image=image,
            exposure_ms=(exposure.applied / 1000.0)
            if exposure and exposure.applied
            else self.config.exposure_ms,
            timestamp_s=started_s,
            bit_depth=depth,
            meta={
                "camera": self.camera_id,
                "gain": gain.applied if gain and gain.applied is not None else self.config.gain,
                "exposure_applied": bool(exposure and exposure.ok),
                "averaged_frames": self.config.average_frames,
                "wall_time_s": wall_s,
            },
        )

    def close(self) -> None:
        ia, self._ia = self._ia, None
        if ia is not None:
            stop = getattr(ia, "stop", None) or getattr(ia, "stop_acquisition", None)
            _quietly(stop)
            _quietly(getattr(ia, "destroy", None))
        h = getattr(self, "_h", None)
        if h is not None:
            _quietly(getattr(h, "reset", None))


def _quietly(fn: Callable[[], Any] | None) -> None:
    """Closing must not mask the error that led to it."""
    if fn is None:
        return
    try:
        fn()
    except Exception as exc:  # any harvesters/GenTL error while shutting down
        log.debug("genicam close: %s", exc)
