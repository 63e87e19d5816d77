"""The instrument file (TOML) as pydantic models.

With no file every default describes the simulated instrument, so each command
runs out of the box. A wrong field becomes one line naming the field, the value
and what is allowed (see `ConfigError`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from hdme_focus.core.errors import UsageError
from hdme_focus.optics import ThinLens

StageDriver = Literal["sim", "replay", "gcode", "zaber", "apt"]
CameraDriver = Literal["sim", "replay", "opencv", "genicam"]
SceneName = Literal["letters", "tilted", "slide", "image"]


class ConfigError(UsageError):
    """A user-fixable problem in the instrument file; str() is the one-line message."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class SerialConfig(_Strict):
    """Serial link of a hardware stage (ignored by the simulator)."""

    port: str | None = Field(None, description="e.g. /dev/ttyUSB0 or COM3")
    baudrate: int = Field(115200, gt=0)
    timeout_s: float = Field(2.0, gt=0, description="per reply")
    rtscts: bool = False


class StageConfig(_Strict):
    driver: StageDriver = "sim"
    min_mm: float = Field(0.0, description="lower soft limit")
    max_mm: float = Field(3.0, description="upper soft limit")
    max_step_mm: float = Field(1.0, gt=0, description="largest single move SafeStage allows")
    speed_mm_s: float = Field(2.0, gt=0)
    settle_s: float = Field(0.05, ge=0, description="wait after a move before capturing")
    move_timeout_s: float = Field(30.0, gt=0, description="longest a single move may take")
    start_mm: float = Field(1.0, description="simulator: power-on position")
    backlash_mm: float = Field(0.0, ge=0, description="simulator: lost motion on reversal")
    position_noise_mm: float = Field(0.0, ge=0, description="simulator: 1-sigma landing error")
    serial: SerialConfig = SerialConfig()
    axis: str = Field("Z", description="G-code axis letter / Zaber axis number")
    dialect: Literal["grbl", "marlin"] = "grbl"
    device_address: int = Field(1, ge=0, description="Zaber device number / APT destination")
    steps_per_mm: float = Field(
        0.0, ge=0, description="Zaber microsteps or APT encoder counts per mm (0 = driver default)"
    )
    feed_mm_min: float = Field(120.0, gt=0, description="G-code feed rate")
    allow_unhomed: bool = Field(False, description="move an axis that reports it is not homed")
    home_on_connect: bool = Field(
        False, description="home the axis when the port opens if it is not homed"
    )
    replay_dir: Path | None = Field(None, description="replay: recorded sweep directory")

    @model_validator(mode="after")
    def _limits_ordered(self) -> StageConfig:
        if not self.min_mm < self.max_mm:
            raise ValueError(f"min_mm ({self.min_mm}) must be below max_mm ({self.max_mm})")
        return self


class CameraConfig(_Strict):
    driver: CameraDriver = "sim"
    width_px: int = Field(512, ge=16, le=16384)
    height_px: int = Field(384, ge=16, le=16384)
    exposure_ms: float = Field(10.0, gt=0)
    gain: float = Field(1.0, gt=0)
    bit_depth: Literal[8, 10, 12, 14, 16] = 12
    device: str = Field("0", description="opencv: device index or URL/path")
    warmup_frames: int = Field(2, ge=0)
    average_frames: int = Field(1, ge=1)
    cti_file: Path | None = Field(None, description="genicam: GenTL producer (.cti) file")
    # simulator sensor model
    full_well_e: float = Field(10000.0, gt=0, description="electrons at saturation")
    read_noise_e: float = Field(5.0, ge=0)
    photon_flux_e_per_ms: float = Field(
        600.0, gt=0, description="simulator: electrons per ms on a white object"
    )
    seed: int | None = Field(0, description="simulator noise seed; null for fresh noise")


class OpticsConfig(_Strict):
    focal_length_mm: float = Field(50.0, gt=0)
    f_number: float = Field(8.0, gt=0)
    pixel_pitch_um: float = Field(5.0, gt=0)
    sensor_distance_mm: float = Field(
        51.0, gt=0, description="lens-to-sensor distance at stage position 0"
    )
    setup: Literal["image", "object"] = Field(
        "image", description="image: stage moves sensor/lens; object: stage moves the sample"
    )

    @model_validator(mode="after")
    def _behind_focal_plane(self) -> OpticsConfig:
        # both set-ups: a sensor at or inside the focal length sees no real image at all
        if self.sensor_distance_mm <= self.focal_length_mm:
            raise ValueError(
                f"sensor_distance_mm ({self.sensor_distance_mm:g}) must exceed focal_length_mm "
                f"({self.focal_length_mm:g}) for a real image; measure the lens-to-sensor "
                "distance at stage position 0"
            )
        return self

    def lens(self) -> ThinLens:
        return ThinLens(
            self.focal_length_mm,
            self.f_number,
            self.pixel_pitch_um,
            self.sensor_distance_mm,
            self.setup,
        )


class SceneConfig(_Strict):
    """What the simulated camera looks at."""

    name: SceneName = "letters"
    image: Path | None = Field(None, description="scene 'image': texture file")
    depth: Path | None = Field(None, description="scene 'image': depth map (TIFF/NPY, mm)")
    seed: int = 0


class PathsConfig(_Strict):
    output_dir: Path = Path("hdme-output")
    calibration: Path | None = None
    weights: Path | None = Field(None, description="estimator weights; default: shipped model")


class InstrumentConfig(_Strict):
    stage: StageConfig = StageConfig()
    camera: CameraConfig = CameraConfig()
    optics: OpticsConfig = OpticsConfig()
    scene: SceneConfig = SceneConfig()
    paths: PathsConfig = PathsConfig()


def _describe(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    field = ".".join(str(p) for p in first["loc"]) or "(file)"
    value = first.get("input")
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field; check spelling (see `hdme-focus config show` for valid fields)"
    shown = "" if isinstance(value, dict) else f" = {value!r}"
    extra = f" (and {len(err.errors()) - 1} more)" if len(err.errors()) > 1 else ""
    return f"{source}: {field}{shown}: {msg}{extra}"


def load_config(path: Path | None = None) -> InstrumentConfig:
    """Read and validate an instrument file; None gives the simulator defaults."""
    if path is None:
        return InstrumentConfig()
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a UTF-8 text file (byte {exc.start}: {exc.reason}); save the "
            "instrument file as UTF-8 TOML"
        ) from exc
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return InstrumentConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe(exc, str(path))) from exc


def to_toml(config: InstrumentConfig) -> str:
    """Render a configuration as TOML (what `config show` prints)."""
    lines: list[str] = []

    def fmt(v: object) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'

    def section(name: str, model: BaseModel) -> None:
        scalars = []
        subs = []
        for key in type(model).model_fields:
            value = getattr(model, key)
            if isinstance(value, BaseModel):
                subs.append((f"{name}.{key}", value))
            elif value is None:
                scalars.append(f"# {key} = (unset)")
            else:
                scalars.append(f"{key} = {fmt(value)}")
        lines.append(f"[{name}]")
        lines.extend(scalars)
        lines.append("")
        for sub_name, sub in subs:
            section(sub_name, sub)

    for key in InstrumentConfig.model_fields:
        section(key, getattr(config, key))
    return "\n".join(lines)
