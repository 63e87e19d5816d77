"""Keep the instrument and the estimator loaded between calls: a server on a local Unix socket.

A command-line `autofocus` pays seconds of start-up (Python, torch, the model,
the simulator's scene) for a fraction of a second of work. `hdme-focus serve`
pays it once: it opens the instrument (stage behind its SafeStage) and keeps
every estimator and calibration it has loaded, then answers requests, one JSON
object per line, each with one JSON line:

    {"op": "status"}
    {"op": "autofocus", "roi": "X,Y,W,H", "method": "hdme", "direction": "auto", ...}
    {"op": "estimate", "roi": "X,Y,W,H"}
    {"op": "shutdown"}

    -> {"ok": true, "exit_code": 0, "result": {...}, "summary": "..."}
    -> {"ok": false, "exit_code": 2, "error": "one line: the value and the fix"}

Only a Unix socket (mode 0600) is offered: no network port, so no remote
connection can reach the stage. Requests run one at a time in the main thread,
so SIGTERM, SIGHUP and Ctrl-C (core/signals.py) interrupt them like a command:
the exception leaves `serve`, which removes the socket, and the caller's
`with Instrument` stops the stage and closes the devices.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import selectors
import socket
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from hdme_focus.calibration.model import Calibration
from hdme_focus.core.errors import EXIT_NOT_IN_FOCUS, EXIT_USAGE, HdmeError, UsageError
from hdme_focus.core.roi import Roi, parse_roi
from hdme_focus.estimation.base import DefocusEstimator
from hdme_focus.instrument.autofocus import estimate_roi
from hdme_focus.instrument.devices import Instrument
from hdme_focus.instrument.session import AutofocusRefused

EXIT_INTERNAL = 1  # a bug, not the user's input: the reply says so and the server goes on
MAX_LINE_BYTES = 1 << 20  # a request longer than this is not one of ours
SEND_TIMEOUT_S = 5.0  # a client that stops reading does not hold the stage hostage

EstimatorLoader = Callable[[str | None], DefocusEstimator]
CalibrationLoader = Callable[[Path, DefocusEstimator], Calibration]
Describe = Callable[[HdmeError], tuple[str, int]]


class ServerError(UsageError):
    """The server cannot start: the socket path is taken or unusable."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AutofocusRequest(_Request):
    op: Literal["autofocus"]
    roi: str
    method: Literal["hdme", "brent", "sweep"] = "hdme"
    direction: str = "auto"
    verify: bool = False
    refine: bool = True  # as `autofocus --refine` (the default): the hybrid
    max_tries: int = 1
    prior_uncertainty_mm: float | None = None
    margin_px: int | None = None
    span_mm: float | None = None
    widen: bool = False
    global_calibration: bool = False  # as `autofocus --global-calibration`
    calibration: str | None = None
    estimator: str | None = None


class EstimateRequest(_Request):
    op: Literal["estimate"]
    roi: str
    margin_px: int | None = None
    calibration: str | None = None  # also report the distance |z - z0|
    estimator: str | None = None


class PlainRequest(_Request):
    op: Literal["status", "shutdown"]


def _describe(exc: HdmeError) -> tuple[str, int]:
    return str(exc), exc.exit_code


def _one_line(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "request"
    return f"bad request: {where}: {first['msg']} (got {first.get('input')!r})"


@dataclass
class FocusServer:
    """The kept-loaded instrument, estimators and calibrations; `handle` answers one request.

    `load_estimator` and `load_calibration` are the CLI's own loaders (the same
    defaults and checks as `hdme-focus autofocus`); each is called once per
    estimator name and per calibration file version, and the counters say so.
    """

    instrument: Instrument
    load_estimator: EstimatorLoader
    load_calibration: CalibrationLoader
    default_calibration: Path
    state_file: Path | None = None
    describe: Describe = _describe
    estimator_loads: int = 0
    calibration_loads: int = 0
    requests: int = 0
    _estimators: dict[str | None, DefocusEstimator] = field(default_factory=dict, repr=False)
    _calibrations: dict[tuple[Any, ...], Calibration] = field(default_factory=dict, repr=False)
    _started_s: float = field(default_factory=time.monotonic, repr=False)
    stopping: bool = False

    # ----------------------------------------------------------------- loading, once

    def estimator(self, name: str | None) -> DefocusEstimator:
        if name not in self._estimators:
            self._estimators[name] = self.load_estimator(name)
            self.estimator_loads += 1
        return self._estimators[name]

    def calibration(self, path: str | None, estimator: DefocusEstimator) -> Calibration:
        """The calibration, reloaded only when its file changed (a new `calibrate`)."""
        source = Path(path) if path is not None else self.default_calibration
        try:
            version: int | None = source.stat().st_mtime_ns
        except OSError:
            version = None  # the loader says what is wrong with the file
        key = (source, version, estimator.name)
        if key not in self._calibrations or version is None:
            self._calibrations[key] = self.load_calibration(source, estimator)
            self.calibration_loads += 1
        return self._calibrations[key]

    # ----------------------------------------------------------------- requests

    def handle(self, request: Any) -> dict[str, Any]:
        """One reply for one decoded request; HdmeErrors become one line and their exit code.

        KeyboardInterrupt and signals pass through: they end the server.
        """
        self.requests += 1
        try:
            op = request.get("op") if isinstance(request, dict) else None
            if op == "autofocus":
                return self._autofocus(AutofocusRequest.model_validate(request))
            if op == "estimate":
                return self._estimate(EstimateRequest.model_validate(request))
            if op in ("status", "shutdown"):
                PlainRequest.model_validate(request)
                if op == "shutdown":
                    self.stopping = True
                return {"ok": True, "exit_code": 0, "result": self.status()}
            return _error(
                f"bad request: op {op!r}; choose autofocus, estimate, status or shutdown",
                EXIT_USAGE,
            )
        except ValidationError as exc:
            return _error(_one_line(exc), EXIT_USAGE)
        except AutofocusRefused as exc:
            reply = _error(*self.describe(exc))
            if exc.result is not None:
                reply["result"] = exc.result.to_json()
            return reply
        except HdmeError as exc:
            self._stop_stage()
            return _error(*self.describe(exc))
        except Exception as exc:  # a bug: say it, stop the stage, keep serving
            self._stop_stage()
            return _error(f"internal error: {type(exc).__name__}: {exc}", EXIT_INTERNAL)

    def status(self) -> dict[str, Any]:
        stage = self.instrument.stage
        return {
            "position_mm": stage.position_mm(),
            "soft_limits_mm": [stage.min_mm, stage.max_mm],
            "stage_driver": self.instrument.config.stage.driver,
            "camera_driver": self.instrument.config.camera.driver,
            "estimators": [e.name for e in self._estimators.values()],
            "estimator_loads": self.estimator_loads,
            "calibration_loads": self.calibration_loads,
            "requests": self.requests,
            "uptime_s": time.monotonic() - self._started_s,
            "pid": os.getpid(),
        }

    def _region(self, spec: str) -> Roi:
        region = parse_roi(spec)
        cam = self.instrument.config.camera
        if cam.driver != "replay":
            region.check_inside(cam.width_px, cam.height_px)
        return region

    def _autofocus(self, req: AutofocusRequest) -> dict[str, Any]:
        from hdme_focus.instrument.focus_request import NO_REFINE, FocusRequest, run_focus

        request = FocusRequest(**req.model_dump(exclude={"op", "roi", "calibration", "estimator"}))
        request.check({NO_REFINE: "refine: false"})
        region = self._region(req.roi)
        hdme = None
        if req.method == "hdme":
            est = self.estimator(req.estimator)
            hdme = (self.calibration(req.calibration, est), est)
        source = Path(req.calibration) if req.calibration is not None else self.default_calibration
        result = run_focus(self.instrument, region, request, hdme, self.state_file, source)
        code = EXIT_NOT_IN_FOCUS if result.in_focus is False else 0
        return {
            "ok": True,
            "exit_code": code,
            "result": result.to_json(),
            "summary": result.summary_line(),
        }

    def _estimate(self, req: EstimateRequest) -> dict[str, Any]:
        region = self._region(req.roi)
        est = self.estimator(req.estimator)
        cal = None if req.calibration is None else self.calibration(req.calibration, est)
        frame = self.instrument.capture()
        stats = estimate_roi(frame, region, est, req.margin_px)
        out: dict[str, Any] = {
            "roi": region.spec,
            "position_mm": frame.position_mm,
            "estimator": est.name,
            "sigma_px": stats.sigma_px,
            "spread_px": stats.spread_px,
            "confidence": stats.confidence,
            "textured_fraction": stats.textured_fraction,
            "saturated_fraction": stats.saturated_fraction,
        }
        if cal is not None and math.isfinite(stats.sigma_px):
            roi_cal, _ = cal.for_roi(region.as_tuple())
            out["distance_mm"] = float(roi_cal.distance_mm(stats.sigma_px))
            out["calibration_region"] = roi_cal.name
        summary = f"estimate ROI {region.spec} at {frame.position_mm:.4f} mm: " + (
            f"sigma {stats.sigma_px:.2f} +- {stats.spread_px:.2f} px, "
            f"confidence {stats.confidence:.2f}"
        )
        return {"ok": True, "exit_code": 0, "result": _finite(out), "summary": summary}

    def _stop_stage(self) -> None:
        with contextlib.suppress(Exception):
            self.instrument.stage.stop()

    # ----------------------------------------------------------------- the socket

    def serve(self, socket_path: Path, ready: Callable[[], None] | None = None) -> None:
        """Answer requests on `socket_path` until a `shutdown` request or a signal."""
        with listening(socket_path) as listener, selectors.DefaultSelector() as sel:
            sel.register(listener, selectors.EVENT_READ, None)
            buffers: dict[socket.socket, bytearray] = {}
            if ready is not None:
                ready()
            try:
                while not self.stopping:
                    for key, _ in sel.select():
                        if key.data is None:
                            conn, _addr = listener.accept()
                            conn.settimeout(SEND_TIMEOUT_S)
                            buffers[conn] = bytearray()
                            sel.register(conn, selectors.EVENT_READ, "client")
                        else:
                            conn = key.fileobj  # type: ignore[assignment]
                            if not self._read(conn, buffers[conn]):
                                sel.unregister(conn)
                                buffers.pop(conn)
                                conn.close()
                        if self.stopping:
                            break
            finally:
                for conn in buffers:
                    conn.close()

    def _read(self, conn: socket.socket, buf: bytearray) -> bool:
        """Answer every complete line received; False when the connection is done."""
        try:
            chunk = conn.recv(65536)
        except OSError:
            return False
        if not chunk:
            return False
        buf.extend(chunk)
        while b"\n" in buf and not self.stopping:
            line, _, rest = bytes(buf).partition(b"\n")
            buf[:] = rest
            if line.strip() and not self._reply(conn, self._decode_and_handle(line)):
                return False
        if len(buf) > MAX_LINE_BYTES:
            self._reply(conn, _error(f"bad request: longer than {MAX_LINE_BYTES} bytes", 2))
            return False
        return True

    def _decode_and_handle(self, line: bytes) -> dict[str, Any]:
        try:
            request = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            self.requests += 1
            return _error(f"bad request: not one JSON object per line ({exc})", EXIT_USAGE)
        return self.handle(request)

    @staticmethod
    def _reply(conn: socket.socket, reply: dict[str, Any]) -> bool:
        try:
            conn.sendall(json.dumps(reply, allow_nan=False).encode() + b"\n")
        except OSError:
            return False
        return True


def _error(message: str, code: int) -> dict[str, Any]:
    return {"ok": False, "exit_code": code, "error": " ".join(message.split())}


def _finite(d: dict[str, Any]) -> dict[str, Any]:
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


@contextlib.contextmanager
def listening(socket_path: Path) -> Iterator[socket.socket]:
    """A Unix socket at `socket_path` (mode 0600), removed on exit.

    A live server already there is never displaced, nor is any other file; a
    socket left by a server that died is replaced.
    """
    path = Path(socket_path)
    if path.exists() or path.is_symlink():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ServerError(f"--socket {path}: is not a socket; choose another path")
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # stale: nobody listens
        else:
            raise ServerError(f"--socket {path}: a server is already listening; stop it first")
        finally:
            probe.close()
    path.parent.mkdir(parents=True, exist_ok=True)
    # bound and listening under a temporary name, then linked into place: a client that
    # sees the path can connect at once, and an existing file is never replaced
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)  # created 0600: only this user may drive the stage
    try:
        sock.bind(str(tmp))
        sock.listen(8)
        os.link(tmp, path)
    except OSError as exc:
        sock.close()
        raise ServerError(f"--socket {path}: cannot listen ({exc.strerror or exc})") from None
    finally:
        os.umask(old_umask)
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    try:
        yield sock
    finally:
        sock.close()
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
