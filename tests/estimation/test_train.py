"""Training: learns, checkpoints and resumes exactly, exports a loadable model with a card."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from hdme_focus.estimation import load_estimator
from hdme_focus.estimation.model import build_model, standardize
from hdme_focus.estimation.synthesis import SynthesisRecipe, SyntheticDefocusDataset
from hdme_focus.estimation.train import (
    BEST_NAME,
    CKPT_NAME,
    RECIPES_DIR,
    TrainRecipe,
    export,
    load_recipe,
    loss_fn,
    lr_at,
    train,
)
from hdme_focus.estimation.train.tasks import TASKS
from hdme_focus.estimation.weights import default_weights_path


def _tiny_recipe(**kw: object) -> TrainRecipe:
    base: dict[str, object] = dict(
        preset="hdme-tiny",
        steps=6,
        batch_size=2,
        crop_px=32,
        val_every=3,
        val_samples=2,
        val_crop_px=32,
        checkpoint_every=3,
        num_workers=0,
        lr=1e-3,
    )
    base.update(kw)
    return TrainRecipe.model_validate(base)


def test_a_few_steps_reduce_the_loss_on_a_tiny_problem() -> None:
    import skimage.data

    torch.manual_seed(0)
    src = [skimage.data.camera().astype("float32") / 255.0]
    data = SyntheticDefocusDataset(src, 2, 32, SynthesisRecipe(), seed=1)
    x = torch.stack([data[i][0] for i in range(2)])
    y = torch.stack([data[i][1] for i in range(2)])
    model = build_model("hdme-tiny")
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    recipe = _tiny_recipe()
    losses = []
    for _ in range(15):
        loss = loss_fn(model(standardize(x)), y, recipe)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]


def test_lr_schedule_warms_up_and_anneals() -> None:
    r = _tiny_recipe(steps=100, warmup_fraction=0.1, lr=1e-2)
    assert lr_at(0, r) < lr_at(9, r) == pytest.approx(1e-2)
    assert lr_at(99, r) < 0.02 * 1e-2
    assert lr_at(20, r, time_fraction=0.99) < 0.02 * 1e-2  # time cap ends the schedule too


def test_resume_continues_identically(tmp_path: Path) -> None:
    recipe = _tiny_recipe(steps=4, val_every=2, checkpoint_every=2)
    straight = train(recipe, tmp_path / "a", device="cpu", progress=False)
    train(recipe, tmp_path / "b", device="cpu", progress=False, stop_after=2)
    resumed = train(recipe, tmp_path / "b", device="cpu", progress=False, resume=True)
    assert straight.step == resumed.step == 4
    from safetensors.torch import load_file

    a = load_file(str(tmp_path / "a" / CKPT_NAME))
    b = load_file(str(tmp_path / "b" / CKPT_NAME))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)
    with (tmp_path / "b" / "metrics.csv").open() as fh:
        steps = [int(r["step"]) for r in csv.DictReader(fh)]
    assert steps == list(range(1, 5))  # no duplicated or missing rows after resume
    assert (tmp_path / "b" / "loss.png").stat().st_size > 0


def test_training_never_sees_the_evaluation_images_whatever_its_seed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hdme_focus.estimation.sources import load_source_images
    from hdme_focus.estimation.train import loop as train_mod

    seen: list[list[object]] = []

    class Stop(Exception):
        pass

    def capture(sources: list[object], *args: object, **kwargs: object) -> None:
        seen.append(sources)
        raise Stop

    monkeypatch.setattr(train_mod, "SyntheticDefocusDataset", capture)
    _, heldout = load_source_images()  # what `evaluate` and the model card test on
    for seed in (0, 5, 11):
        with pytest.raises(Stop):
            train(_tiny_recipe(seed=seed), tmp_path / f"s{seed}", device="cpu", progress=False)
    assert len(seen) == 3
    for used in seen:
        assert len(used) == len(seen[0])
        for img in used:
            assert not any(np.shape(img) == np.shape(h) and np.array_equal(img, h) for h in heldout)


@pytest.mark.skipif(not default_weights_path().is_file(), reason="shipped weights not installed")
def test_fine_tuning_starts_from_the_given_weights(tmp_path: Path) -> None:
    shipped = default_weights_path()
    rec = _tiny_recipe(preset="hdme-lite", steps=2, init_weights=str(shipped), lr=1e-9)
    train(rec, tmp_path / "ft", device="cpu", progress=False, stop_after=1)
    # resuming needs no --init again: the checkpoint holds the weights, the card the lineage
    resumed = rec.model_copy(update={"init_weights": None})
    train(resumed, tmp_path / "ft", device="cpu", progress=False, resume=True)
    from safetensors.torch import load_file

    tuned = load_file(str(tmp_path / "ft" / CKPT_NAME))
    start = load_file(str(shipped))
    conv = next(k for k in start if k.endswith("weight") and start[k].ndim == 4)
    torch.testing.assert_close(
        tuned[f"model.{conv}"], start[conv], rtol=0, atol=1e-6
    )  # lr ~ 0: unchanged
    _, card_path = export(tmp_path / "ft", tmp_path / "ft.safetensors", heldout_metrics={})
    card = json.loads(card_path.read_text())
    parent = json.loads(load_estimator(device="cpu").metadata["model_card"])
    assert card["data_recipe"]["init_weights"] == str(shipped)
    assert card["fine_tuned_from"]["steps_run"] == parent["steps_run"]  # history kept
    with pytest.raises(ValueError, match="not the recipe's preset"):
        train(_tiny_recipe(init_weights=str(shipped)), tmp_path / "bad", device="cpu")


def test_a_finished_run_is_not_overwritten(tmp_path: Path) -> None:
    recipe = _tiny_recipe(steps=1)
    train(recipe, tmp_path / "r", device="cpu", progress=False)
    with pytest.raises(FileExistsError, match="--resume"):
        train(recipe, tmp_path / "r", device="cpu", progress=False)


def test_export_writes_loadable_weights_and_a_model_card(tmp_path: Path) -> None:
    run = tmp_path / "run"
    train(_tiny_recipe(steps=3), run, device="cpu", progress=False)
    assert (run / BEST_NAME).exists()
    w, card_path = export(
        run, tmp_path / "out" / "m.safetensors", heldout_metrics={"mae_norm": 0.5}
    )
    card = json.loads(card_path.read_text())
    assert card["preset"] == "hdme-tiny" and card["sigma_range_px"] == [0.0, 10.0]
    assert card["heldout_metrics"]["mae_norm"] == 0.5 and card["steps_run"] == 3
    est = load_estimator(w, device="cpu")
    assert est.predict(torch.rand(40, 40).numpy()).shape == (40, 40)


def test_shipped_recipes_are_valid() -> None:
    for path in sorted(RECIPES_DIR.glob("*.toml")):
        recipe = load_recipe(path)
        TASKS[recipe.model].build(recipe.preset)  # the preset exists for its model
    assert (RECIPES_DIR / "hdme-lite-cpu.toml").exists()


def test_cli_train_rejects_an_unknown_preset(tmp_path: Path) -> None:
    from hdme_focus.cli import _register, app

    _register()
    res = CliRunner().invoke(app, ["train", "--preset", "nope", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "unknown preset" in res.output


def test_cli_estimate_writes_maps_and_reports_bad_files(tmp_path: Path) -> None:
    import cv2
    import numpy as np
    import tifffile

    from hdme_focus.cli import _register, app
    from hdme_focus.estimation.weights import save_weights

    _register()
    w = save_weights(
        tmp_path / "w.safetensors", build_model("hdme-tiny"), preset="hdme-tiny", sigma_max_px=10
    )
    good = tmp_path / "frame.png"
    cv2.imwrite(str(good), (np.random.default_rng(0).random((40, 50)) * 255).astype(np.uint8))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png")
    out = tmp_path / "out"
    res = CliRunner().invoke(
        app, ["estimate", str(bad), str(good), "--out", str(out), "--weights", str(w)]
    )
    assert res.exit_code != 0
    assert "broken.png" in res.output
    sigma = tifffile.imread(out / "frame.sigma.tiff")
    assert sigma.shape == (40, 50) and sigma.dtype == np.float32
    assert (out / "frame.sigma.png").stat().st_size > 0
