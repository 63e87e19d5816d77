"""The simulated instrument: stage kinematics, camera physics, ground truth, scenes."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from hdme_focus.config import (
    CameraConfig,
    ConfigError,
    InstrumentConfig,
    OpticsConfig,
    SceneConfig,
    SimStageConfig,
)
from hdme_focus.drivers.base import Camera, CameraError, Stage
from hdme_focus.drivers.sim import SimCamera, SimClock, SimStage, open_sim
from hdme_focus.drivers.sim.scenes import build_scene
from hdme_focus.textures import SCENE_TEXTURES

Bench = tuple[SimStage, SimCamera, SimClock]
BUILT_IN = ["letters", "tilted", "slide"]


def go(stage: SimStage, target_mm: float) -> None:
    stage.move_to(target_mm)
    stage.wait(60.0)


# --------------------------------------------------------------------------- clock and stage


def test_sim_clock_sleeps_instantly() -> None:
    clock = SimClock()
    clock.sleep(2.5)
    clock.sleep(-1.0)
    assert clock.monotonic() == 2.5


def test_stage_has_finite_speed_and_stops_where_it_is() -> None:
    clock = SimClock()
    stage = SimStage(SimStageConfig(start_mm=1.0, speed_mm_s=2.0), clock)
    assert isinstance(stage, Stage)
    stage.move_to(2.0)  # 0.5 s of travel
    assert stage.is_moving() and stage.position_mm() == 1.0
    clock.sleep(0.25)
    assert stage.position_mm() == pytest.approx(1.5)
    stage.stop()
    clock.sleep(1.0)
    assert not stage.is_moving() and stage.position_mm() == pytest.approx(1.5)
    go(stage, 0.5)
    assert clock.monotonic() == pytest.approx(1.25 + 1.0 / 2.0)
    assert stage.history == [2.0, 0.5] and stage.moves == 2 and stage.stopped == 1


def test_backlash_is_lost_motion_on_reversal() -> None:
    clock = SimClock()
    stage = SimStage(SimStageConfig(start_mm=1.0, backlash_mm=0.05), clock)
    go(stage, 2.0)  # moving up: carriage pushed, no offset
    assert stage.true_position_mm() == pytest.approx(2.0)
    go(stage, 1.5)  # reversal: the first 0.05 mm are lost
    assert stage.position_mm() == pytest.approx(1.5)
    assert stage.true_position_mm() == pytest.approx(1.55)
    go(stage, 1.52)  # small move up inside the play: carriage does not move
    assert stage.true_position_mm() == pytest.approx(1.55)
    go(stage, 1.8)
    assert stage.true_position_mm() == pytest.approx(1.8)


def test_landing_noise_has_the_configured_scatter_and_is_seeded() -> None:
    def landings(seed: int) -> np.ndarray:
        clock = SimClock()
        stage = SimStage(SimStageConfig(position_noise_mm=0.002), clock, seed=seed)
        out = []
        for i in range(400):
            target = 1.0 + 0.5 * (i % 2)
            go(stage, target)
            out.append(stage.true_position_mm() - target)
            assert stage.position_mm() == target  # the stage reports the commanded position
        return np.array(out)

    errors = landings(3)
    assert errors.std() == pytest.approx(0.002, rel=0.15)
    assert abs(errors.mean()) < 0.0005
    np.testing.assert_array_equal(errors, landings(3))
    assert not np.array_equal(errors, landings(4))


def test_reseed_restarts_the_landing_noise() -> None:
    clock = SimClock()
    stage = SimStage(SimStageConfig(position_noise_mm=0.002), clock, seed=0)
    runs = []
    for extra_moves in (0, 3):
        for _ in range(extra_moves):  # a different history must not matter after reseed
            go(stage, 1.2)
        go(stage, 1.0)
        stage.reseed(5)
        go(stage, 1.5)
        runs.append(stage.true_position_mm())
    assert runs[0] == runs[1] != pytest.approx(1.5, abs=1e-9)


# --------------------------------------------------------------------------- scenes and truth


@pytest.mark.parametrize("name", BUILT_IN)
def test_every_region_focuses_well_inside_the_default_limits(name: str) -> None:
    cfg = InstrumentConfig(
        camera=CameraConfig(width_px=160, height_px=120), scene=SceneConfig(name=name)
    )
    _, camera, _ = open_sim(cfg)
    assert len(camera.scene.regions) >= 3
    for roi in camera.scene.regions.values():
        assert 0.8 <= camera.focus_position_mm(roi) <= 2.2
    sigmas = np.stack([camera.true_sigma_px(z) for z in np.linspace(0.0, 3.0, 16)])
    assert float((sigmas <= 10.0).mean()) > 0.7  # blur mostly within 0..10 px over the range


@pytest.mark.parametrize("name", BUILT_IN)
def test_true_sigma_is_zero_at_a_regions_focus_and_grows_both_ways(name: str) -> None:
    cfg = InstrumentConfig(
        camera=CameraConfig(width_px=160, height_px=120), scene=SceneConfig(name=name)
    )
    _, camera, _ = open_sim(cfg)
    for region, (x, y, w, h) in camera.scene.regions.items():
        z0 = camera.focus_position_mm((x, y, w, h))

        def median_sigma(z: float, x: int = x, y: int = y, w: int = w, h: int = h) -> float:
            return float(np.median(camera.true_sigma_px(z)[y : y + h, x : x + w]))

        assert median_sigma(z0) < 0.25, region  # ~0: a tilted ROI spans a little depth
        assert median_sigma(z0 - 0.3) > 1.5 < median_sigma(z0 + 0.3), region
        assert median_sigma(z0 - 0.6) > median_sigma(z0 - 0.3)
        assert median_sigma(z0 + 0.6) > median_sigma(z0 + 0.3)


def test_letters_are_at_different_depths_in_front_of_the_background(sim_bench: Bench) -> None:
    _, camera, _ = sim_bench
    regions = camera.scene.regions
    assert set(regions) == {"H", "D", "M", "background"}
    focus = {k: camera.focus_position_mm(r) for k, r in regions.items()}
    assert focus["H"] > focus["D"] > focus["M"] > focus["background"]  # nearer focuses further out
    assert min(np.diff(sorted(focus.values()))) > 0.2


def test_focus_measure_of_rendered_frames_peaks_at_the_true_focus(sim_bench: Bench) -> None:
    stage, camera, _ = sim_bench
    for region in ("D", "background"):
        x, y, w, h = camera.scene.regions[region]
        z0 = camera.focus_position_mm((x, y, w, h))
        positions = z0 + 0.007 + 0.02 * np.arange(-5, 6)
        scores = []
        for z in positions:
            go(stage, float(z))
            img = camera.capture().as_float()
            scores.append(float(cv2.Laplacian(img[y : y + h, x : x + w], cv2.CV_32F).var()))
        assert abs(positions[int(np.argmax(scores))] - z0) <= 0.02 + 1e-9, region


MACRO = OpticsConfig(f_number=5.6, sensor_distance_mm=100.0, setup="object")


@pytest.mark.parametrize("name", BUILT_IN)
def test_object_setup_built_in_scenes_focus_at_the_same_positions(name: str) -> None:
    small = CameraConfig(width_px=96, height_px=64)
    image_side = open_sim(InstrumentConfig(camera=small, scene=SceneConfig(name=name)))[1]
    macro = open_sim(InstrumentConfig(camera=small, optics=MACRO, scene=SceneConfig(name=name)))[1]
    for roi in image_side.scene.regions.values():
        assert macro.focus_position_mm(roi) == pytest.approx(
            image_side.focus_position_mm(roi), abs=0.01
        )


def test_object_setup_slide_on_a_macro_bench() -> None:
    cfg = InstrumentConfig(
        camera=CameraConfig(width_px=160, height_px=120),
        optics=MACRO,
        scene=SceneConfig(name="slide"),
    )
    stage, camera, _ = open_sim(cfg)
    roi = camera.scene.regions["center"]
    z0 = camera.focus_position_mm(roi)
    assert z0 == pytest.approx(1.5, abs=0.05)
    x, y, w, h = roi
    assert float(np.median(camera.true_sigma_px(z0)[y : y + h, x : x + w])) < 0.05
    # moving the sample by 1 mm blurs it by k ~ 6.3 px
    assert float(np.median(camera.true_sigma_px(z0 + 1.0)[y : y + h, x : x + w])) == pytest.approx(
        6.3, rel=0.05
    )
    go(stage, z0)
    assert camera.capture().image.shape == (120, 160)


def test_scene_textures_ship_with_scikit_image() -> None:
    import skimage.data

    for name in SCENE_TEXTURES:
        assert np.asarray(getattr(skimage.data, name)()).size > 0


def test_scenes_are_deterministic_by_seed() -> None:
    lens = OpticsConfig().lens()
    a = build_scene(SceneConfig(name="letters", seed=1), 96, 64, lens)
    b = build_scene(SceneConfig(name="letters", seed=1), 96, 64, lens)
    c = build_scene(SceneConfig(name="letters", seed=2), 96, 64, lens)
    np.testing.assert_array_equal(a.layers[0].radiance, b.layers[0].radiance)
    assert not np.array_equal(a.layers[0].radiance, c.layers[0].radiance)
    assert a.regions == c.regions  # geometry does not depend on the seed


# --------------------------------------------------------------------------- camera


@pytest.mark.parametrize(("bits", "dtype"), [(8, np.uint8), (12, np.uint16), (16, np.uint16)])
def test_frames_have_shape_dtype_and_bit_depth(bits: int, dtype: type) -> None:
    camera_cfg = CameraConfig.model_validate({"width_px": 96, "height_px": 64, "bit_depth": bits})
    cfg = InstrumentConfig(camera=camera_cfg)
    stage, camera, _ = open_sim(cfg)
    assert isinstance(camera, Camera)
    go(stage, 1.3)
    frame = camera.capture()
    assert frame.image.shape == (64, 96) and frame.image.dtype == dtype
    assert frame.bit_depth == bits and int(frame.image.max()) <= 2**bits - 1
    assert frame.position_mm == pytest.approx(1.3) and frame.exposure_ms == 10.0
    # default exposure fills ~60% of the well on white: no clipping, plenty of signal
    assert 0.25 < float(frame.as_float().max()) < 0.8


def test_saturation_clips_at_full_scale() -> None:
    cfg = InstrumentConfig(camera=CameraConfig(width_px=96, height_px=64, exposure_ms=40.0))
    _, camera, _ = open_sim(cfg)
    image = camera.capture().image
    assert int(image.max()) == 4095
    assert float((image == 4095).mean()) > 0.2


def test_clock_advances_by_exposure_and_travel(sim_bench: Bench) -> None:
    stage, camera, clock = sim_bench
    frame = camera.capture()
    assert frame.timestamp_s == 0.0 and clock.monotonic() == pytest.approx(0.010)
    go(stage, 2.0)  # 1 mm at 2 mm/s
    assert clock.monotonic() == pytest.approx(0.510)
    assert camera.capture().timestamp_s == pytest.approx(0.510)


def test_camera_sees_the_true_position_backlash_included() -> None:
    cfg = InstrumentConfig(
        camera=CameraConfig(width_px=96, height_px=64), stage=SimStageConfig(backlash_mm=0.05)
    )
    stage, camera, _ = open_sim(cfg)
    go(stage, 2.0)
    go(stage, 1.5)
    frame = camera.capture()
    assert frame.position_mm == pytest.approx(1.55)
    np.testing.assert_allclose(camera.true_sigma_px(), camera.true_sigma_px(1.55))


def test_frames_are_deterministic_by_seed(small_config: InstrumentConfig) -> None:
    first = [open_sim(small_config)[1].capture().image for _ in range(2)]
    np.testing.assert_array_equal(first[0], first[1])
    other = small_config.model_copy(
        update={"camera": small_config.camera.model_copy(update={"seed": 5})}
    )
    assert not np.array_equal(first[0], open_sim(other)[1].capture().image)


def test_camera_refuses_bad_use(sim_bench: Bench) -> None:
    stage, camera, clock = sim_bench
    with pytest.raises(ValueError, match="not inside"):
        camera.focus_position_mm((150, 0, 20, 10))
    with pytest.raises(ValueError, match="build the scene"):
        SimCamera(
            CameraConfig(width_px=64, height_px=48),
            camera.lens,
            camera.scene,
            stage.true_position_mm,
            clock,
        )
    camera.close()
    with pytest.raises(CameraError):
        camera.capture()


# --------------------------------------------------------------------------- user image scene


def _image_files(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    tex = tmp_path / "texture.png"
    cv2.imwrite(str(tex), rng.integers(0, 256, (60, 80), dtype=np.uint8))
    depth = np.full((30, 40), 1300.0)
    depth[:, 20:] = 900.0  # a near object on the right half
    depth_path = tmp_path / "depth.npy"
    np.save(depth_path, depth)
    return tex, depth_path


def test_user_image_scene_is_resized_and_layered(tmp_path: Path) -> None:
    tex, depth = _image_files(tmp_path)
    cfg = InstrumentConfig(
        camera=CameraConfig(width_px=160, height_px=120),
        scene=SceneConfig(name="image", image=tex, depth=depth),
    )
    _, camera, _ = open_sim(cfg)
    assert len(camera.scene.layers) >= 2  # the depth edge is rendered with occlusion
    dist = camera.true_distance_mm()
    assert dist.shape == (120, 160)
    assert np.all(dist[:, :80] == 1300.0) and np.all(dist[:, 80:] == 900.0)
    lens = cfg.optics.lens()
    assert camera.focus_position_mm((100, 10, 40, 40)) == pytest.approx(
        float(lens.focus_position_mm(900.0))
    )
    assert camera.capture().image.shape == (120, 160)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("no_files", "needs scene.image"),
        ("missing_texture", "file not found"),
        ("corrupt_texture", "cannot read it as an image"),
        ("metres", "metres"),
        ("png_depth", "unsupported format"),
        ("3d_depth", "2-D"),
        ("nan_depth", "NaN"),
    ],
)
def test_bad_image_scene_files_give_one_line_config_errors(
    tmp_path: Path, case: str, message: str
) -> None:
    tex, depth = _image_files(tmp_path)
    image: Path | None = tex
    if case == "no_files":
        image, depth = None, depth
    elif case == "missing_texture":
        image = tmp_path / "nope.png"
    elif case == "corrupt_texture":
        image = tmp_path / "bad.png"
        image.write_bytes(b"not an image at all")
    elif case == "metres":
        np.save(depth, np.full((30, 40), 0.9))
    elif case == "png_depth":
        depth = tmp_path / "depth.png"
        cv2.imwrite(str(depth), np.zeros((8, 8), np.uint8))
    elif case == "3d_depth":
        np.save(depth, np.full((3, 30, 40), 1000.0))
    elif case == "nan_depth":
        bad = np.full((30, 40), 1000.0)
        bad[0, 0] = np.nan
        np.save(depth, bad)
    cfg = SceneConfig(name="image", image=image, depth=depth)
    with pytest.raises(ConfigError, match=message) as err:
        build_scene(cfg, 64, 48, OpticsConfig().lens())
    assert "\n" not in str(err.value)
