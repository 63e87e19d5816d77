"""The instrument file (TOML) as pydantic models.

With no file every default describes the simulated instrument, so each command
runs out of the box. A wrong field becomes one line naming the field, the value
and what is allowed (see `ConfigError`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from hdme_focus.core.errors import UsageError
from hdme_focus.optics import ThinLens

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


class _StageCommon(_Strict):
    """What SafeStage needs from every stage: soft limits, step size, timing."""

    min_mm: float = Field(0.0, description="lower soft limit")
    max_mm: float = Field(3.0, description="upper soft limit")
    max_step_mm: float = Field(1.0, gt=0, description="largest single move SafeStage allows")
    settle_s: float = Field(0.05, ge=0, description="wait after a move before capturing")
    move_timeout_s: float = Field(30.0, gt=0, description="longest a single move may take")

    @model_validator(mode="after")
    def _limits_ordered(self) -> Self:
        if not self.min_mm < self.max_mm:
            raise ValueError(f"min_mm ({self.min_mm}) must be below max_mm ({self.max_mm})")
        return self


class SimStageConfig(_StageCommon):
    """The simulated stage (simulated time, backlash, landing noise)."""

    driver: Literal["sim"] = "sim"
    speed_mm_s: float = Field(2.0, gt=0)
    start_mm: float = Field(1.0, description="power-on position")
    backlash_mm: float = Field(0.0, ge=0, description="lost motion on reversal")
    position_noise_mm: float = Field(0.0, ge=0, description="1-sigma landing error")


class ReplayStageConfig(_StageCommon):
    """A recorded sweep played back: the stage moves between its positions."""

    driver: Literal["replay"] = "replay"
    replay_dir: Path | None = Field(None, description="recorded sweep directory")
    speed_mm_s: float = Field(2.0, gt=0, description="simulated travel speed")
    start_mm: float = Field(1.0, description="position at start (snapped to a frame)")


class _SerialStage(_StageCommon):
    """What every serial stage shares: the link and the homing policy."""

    serial: SerialConfig = SerialConfig()
    allow_unhomed: bool = Field(False, description="move an axis that reports it is not homed")
    home_on_connect: bool = Field(
        False, description="home the axis when the port opens if it is not homed"
    )
    home_timeout_s: float = Field(
        120.0, gt=0, description="longest a homing cycle may take (a full-travel search)"
    )


class GcodeStageConfig(_SerialStage):
    """A GRBL 1.1 or Marlin 2 controller (one axis of it)."""

    driver: Literal["gcode"] = "gcode"
    dialect: Literal["grbl", "marlin"] = "grbl"
    axis: str = Field("Z", description="axis letter: X, Y, Z, A, B or C")
    feed_mm_min: float = Field(120.0, gt=0, description="feed rate of every move")


class ZaberStageConfig(_SerialStage):
    """A Zaber device over the ASCII protocol."""

    driver: Literal["zaber"] = "zaber"
    axis: str = Field("1", description="axis number on the device")
    device_address: int = Field(1, ge=0, description="device number on the daisy chain")
    steps_per_mm: float = Field(0.0, ge=0, description="microsteps per mm (required)")


class AptStageConfig(_SerialStage):
    """A Thorlabs APT controller (KDC101 and kin)."""

    driver: Literal["apt"] = "apt"
    axis: str = Field("1", description="channel number")
    device_address: int = Field(1, ge=0, description="APT destination (1: the USB unit)")
    steps_per_mm: float = Field(0.0, ge=0, description="encoder counts per mm (0: Z8 default)")


SerialStageConfig = GcodeStageConfig | ZaberStageConfig | AptStageConfig
StageConfig = Annotated[
    SimStageConfig | ReplayStageConfig | GcodeStageConfig | ZaberStageConfig | AptStageConfig,
    Field(discriminator="driver"),
]
STAGE_MODELS: dict[str, type[_StageCommon]] = {
    "sim": SimStageConfig,
    "replay": ReplayStageConfig,
    "gcode": GcodeStageConfig,
    "zaber": ZaberStageConfig,
    "apt": AptStageConfig,
}
# Every key of the one flat stage model of earlier versions (`config show` wrote
# them all). A file that sets one the chosen driver does not use still loads;
# the key is dropped, as the old model ignored it.
_FLAT_STAGE_KEYS = frozenset(
    {"speed_mm_s", "start_mm", "backlash_mm", "position_noise_mm", "serial", "axis", "dialect",
     "device_address", "steps_per_mm", "feed_mm_min", "allow_unhomed", "home_on_connect",
     "replay_dir"}
)  # fmt: skip


def _drop_other_drivers_keys(data: object) -> object:
    """Keep old single-model stage tables loading under the per-driver models."""
    if not isinstance(data, dict):
        return data
    data = {"driver": "sim", **data}  # no driver named: the simulator, as before
    model = STAGE_MODELS.get(str(data["driver"]))
    if model is None:
        return data  # the discriminator reports the bad driver name
    own = set(model.model_fields)
    return {k: v for k, v in data.items() if k in own or k not in _FLAT_STAGE_KEYS}


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
    color: bool = Field(
        False,
        description="opencv: keep colour frames (RGB) instead of converting them to gray; "
        "--direction chroma reads the side of focus from them",
    )
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
    axial_chromatic_mm: float = Field(
        0.0,
        description="simulator: axial chromatic aberration f_red - f_blue; non-zero renders "
        "RGB frames, red and blue focused apart (0: corrected lens, gray frames)",
    )

    @model_validator(mode="after")
    def _behind_focal_plane(self) -> OpticsConfig:
        # both set-ups: a sensor at or inside the focal length sees no real image at all
        if abs(self.axial_chromatic_mm) >= 0.5 * self.focal_length_mm:
            raise ValueError(
                f"axial_chromatic_mm ({self.axial_chromatic_mm:g}) must be well below the "
                f"focal length ({self.focal_length_mm:g} mm); a singlet has about f/60"
            )
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
            self.axial_chromatic_mm,
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
    stage: StageConfig = Field(default_factory=SimStageConfig)
    camera: CameraConfig = CameraConfig()
    optics: OpticsConfig = OpticsConfig()
    scene: SceneConfig = SceneConfig()
    paths: PathsConfig = PathsConfig()

    @field_validator("stage", mode="before")
    @classmethod
    def _legacy_stage_keys(cls, data: object) -> object:
        return _drop_other_drivers_keys(data)


def _describe(err: ValidationError, source: str) -> str:
    first = err.errors()[0]
    loc = [str(p) for p in first["loc"]]
    if loc[:1] == ["stage"] and loc[1:2] and loc[1] in STAGE_MODELS:
        del loc[1]  # the discriminated union names the driver in the location
    value = first.get("input")
    msg = first["msg"]
    if first["type"] == "extra_forbidden":
        msg = "unknown field; check spelling (see `hdme-focus config show` for valid fields)"
    elif first["type"] == "union_tag_invalid":
        loc.append("driver")
        value = first.get("ctx", {}).get("tag")
        msg = f"no such driver; choose one of {', '.join(repr(d) for d in STAGE_MODELS)}"
    field = ".".join(loc) or "(file)"
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
        keys = list(type(model).model_fields)
        keys.sort(key=lambda k: k != "driver")  # the driver first: it decides the rest
        for key in keys:
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
