"""Rectangular frames end to end: `data.resolution` as height x width, `data.fit` for other aspect ratios,
non-square patch grids in every model, and a tiny 160x90 train-all whose bundle rollout, eval and
infer-actions accept."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tiny
import torch

from genie.cli import main
from genie.config import ConfigError, DataConfig, load_config
from genie.data.datamodule import VideoDataModule
from genie.data.video import read_frames, read_video, write_video
from genie.inference import infer_actions
from genie.models.pixels import fit_frames
from genie.models.resolution import DEFAULT_FIT
from genie.models.sampling import rollout_video
from genie.models.tokenizer import DecodeStream, TokenizerConfig, VideoTokenizer
from genie.models.world import WorldModel

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
WIDE = (24, 40)  # (H, W): a 5:3 grid of 8-pixel patches, 3x5 tokens, small enough for every test here


def tiny_models(resolution=WIDE, patch: int = 8, max_frames: int = 4):
    """(tokenizer, LAM, dynamics), untrained, at `resolution` (default WIDE: 3x5 tokens)."""
    return tiny.tiny_models(resolution, patch, max_frames)


def disk_frames(height: int, width: int, frames: int = 6, radius_fraction: float = 0.3) -> np.ndarray:
    """uint8 (T, H, W, 3): a white disk in the middle of a dark frame (round in the source: a squashed copy is an
    ellipse), red columns at the left and right edges and blue rows at the top and bottom (what a crop drops)."""
    yy, xx = np.mgrid[0:height, 0:width]
    radius = radius_fraction * min(height, width)
    image = np.full((height, width, 3), 40, np.uint8)
    image[(yy - (height - 1) / 2) ** 2 + (xx - (width - 1) / 2) ** 2 <= radius**2] = 255
    image[:, :3] = image[:, -3:] = (255, 0, 0)
    image[:3] = image[-3:] = (0, 0, 255)
    return np.repeat(image[None], frames, axis=0)


def disk_box(frame: np.ndarray) -> tuple[int, int]:
    """(height, width) of the white disk's bounding box."""
    white = (frame > 180).all(-1)
    rows, cols = np.flatnonzero(white.any(1)), np.flatnonzero(white.any(0))
    return rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1


# ------------------------------------------------------------------------------------------- config


def test_resolution_is_one_number_or_height_by_width():
    from genie.training.tokenizer_stage import TokenizerRunConfig

    assert DataConfig().resolution == 64 and DataConfig().fit == "crop"
    assert DataConfig(resolution=[90, 160]).resolution == (90, 160)
    assert DataConfig(resolution=[64, 64]).resolution == 64  # a square pair is the one number
    for override in ("data.resolution=[90,160]", "data.resolution=90x160", "data.resolution=90,160"):
        cfg = load_config(TokenizerRunConfig, None, [override, "model.patch=10"])
        assert cfg.data.resolution == (90, 160) and cfg.model.resolution == (90, 160)
    assert load_config(TokenizerRunConfig, None, ["data.resolution=48"]).data.resolution == 48
    for bad, words in (
        ("data.resolution=[1,2,3]", "height x width"),
        ("data.resolution=0", "positive"),
        ("data.fit=squash", "crop, pad, resize"),
    ):
        with pytest.raises(ConfigError, match=words) as e:
            load_config(TokenizerRunConfig, None, [bad])
        assert "\n" not in str(e.value)


def test_shipped_wide_configs_are_160x90():
    from genie.training.pipeline import stage_configs

    _, cfgs = stage_configs(CONFIGS / "sprites-wide" / "genie.yaml")
    for cfg in cfgs.values():
        assert cfg.data.resolution == (90, 160) and cfg.data.fit == "crop"
    assert cfgs["tokenizer"].model.resolution == (90, 160) and cfgs["lam"].model.resolution == (90, 160)


@pytest.mark.parametrize("stage", ["tokenizer", "lam"])
def test_a_patch_that_does_not_divide_both_sides_is_a_one_line_config_error(stage):
    from genie.training.pipeline import STAGES

    run_config = STAGES[stage][0]
    with pytest.raises(ConfigError) as e:
        load_config(run_config, None, ["data.resolution=[90,160]", "model.patch=8"])
    message = str(e.value)
    assert "\n" not in message
    assert message.startswith("data.resolution [90, 160] must be divisible by model.patch 8")
    assert "model.patch=2 or 5 or 10" in message and "data.resolution=[88,160]" in message
    with pytest.raises(ValueError, match=r"resolution \[90, 160\] must be divisible by patch size 8"):
        VideoTokenizer(TokenizerConfig(resolution=(90, 160), patch=8))


# ------------------------------------------------------------------------------------------- models


def test_every_model_runs_on_a_non_square_grid():
    tokenizer, lam, dynamics = tiny_models()
    assert tokenizer.grid_size == (3, 5) and tokenizer.grid == (3, 5) and dynamics.num_tokens == 15
    video = torch.rand(2, 4, 3, *WIDE)  # (B, T, 3, H, W)
    recon, ids, _ = tokenizer(video)
    assert recon.shape == video.shape and ids.shape == (2, 4, 3, 5)
    assert tokenizer.encode(torch.rand(1, 7, 3, *WIDE)).shape == (1, 7, 3, 5)  # past max_frames: sliding window
    assert tokenizer.decode(ids).shape == video.shape
    with pytest.raises(ValueError, match=r"expected video \(B, T, 3, 24, 40\)"):
        tokenizer.encode(torch.rand(1, 2, 3, 40, 24))
    stream = DecodeStream(tokenizer, ids[:, :2])
    assert stream.push(ids[:, 2]).shape == (2, 3, *WIDE)

    lam.train()
    predicted, actions, _ = lam(video)  # training mode: the within-patch shift on a rectangle
    assert predicted.shape == (2, 3, 3, *WIDE) and actions.shape == (2, 3)
    assert lam.eval().infer_actions(video).shape == (2, 3)

    flat = ids.flatten(-2)  # (B, T, S)
    loss, _ = dynamics.loss(flat, actions)
    loss.backward()
    assert torch.isfinite(loss)
    assert rollout_video(tokenizer, dynamics.eval(), flat, actions, prompt_len=2).shape == video.shape


def test_patch_tokens_run_row_by_row_over_a_rectangle_and_unpatchify_inverts_them():
    from genie.models.blocks import PatchEmbed, unpatchify

    patch, (height, width) = 8, WIDE
    embed = PatchEmbed(patch, 3, 3 * patch * patch, WIDE, max_frames=1)
    with torch.no_grad():  # an identity projection and no positions: tokens are the raw patches
        embed.proj.weight.copy_(torch.eye(3 * patch * patch))
        embed.proj.bias.zero_()
        embed.pos_space.zero_()
        embed.pos_time.zero_()
    video = torch.rand(1, 1, 3, height, width)
    tokens = embed(video)  # (1, 1, 3*5, 3*8*8)
    assert embed.grid_size == (3, 5) and tokens.shape == (1, 1, 15, 192)
    row, col = 2, 4  # token row * w + col is the patch at that row and column
    expected = video[0, 0, :, row * patch : (row + 1) * patch, col * patch : (col + 1) * patch].permute(1, 2, 0)
    torch.testing.assert_close(tokens[0, 0, row * 5 + col], expected.flatten())
    torch.testing.assert_close(unpatchify(tokens, patch, (3, 5)), video)


def test_world_steps_at_the_models_aspect_from_a_prompt_of_any_size():
    world = WorldModel(*tiny_models())
    assert world.frame_size == WIDE and world.fit == "crop"
    first = world.reset(np.zeros((2, 90, 160, 3), np.uint8), seed=0)  # 16:9 prompt, cropped to 5:3
    assert first.shape == (1, *WIDE, 3)
    for action in (0, 3, 1, 2, 0):  # past the 4-frame window: the context slides
        assert world.step([action]).shape == (1, *WIDE, 3)
    batch = world.reset(np.zeros((3, 2, 64, 96, 3), np.uint8), seed=0)
    assert batch.shape == (3, *WIDE, 3) and world.step([0, 1, 2]).shape == (3, *WIDE, 3)


def test_bundle_records_height_by_width_and_a_bundle_without_frames_loads(tmp_path):
    world = WorldModel(*tiny_models(), prompt=np.zeros((2, *WIDE, 3), np.uint8), fit="pad")
    world.save(tmp_path / "wide.pt")
    bundle = torch.load(tmp_path / "wide.pt", weights_only=True)
    assert bundle["frames"] == {"resolution": [24, 40], "fit": "pad", "stride": 1} and bundle["version"] == 2
    loaded = WorldModel.load(tmp_path / "wide.pt")
    assert (loaded.resolution, loaded.frame_size, loaded.fit) == ((24, 40), (24, 40), "pad")
    assert loaded.reset(seed=0).shape == (1, *WIDE, 3)

    square = WorldModel(*tiny_models(resolution=16, patch=4), prompt=np.zeros((2, 16, 16, 3), np.uint8))
    square.save(tmp_path / "square.pt")
    old = torch.load(tmp_path / "square.pt", weights_only=True)
    del old["frames"]  # no frames record: the tokenizer's int resolution, the default fit (the legacy "resize" is gone)
    old["version"] = 1
    torch.save(old, tmp_path / "old.pt")
    loaded = WorldModel.load(tmp_path / "old.pt")
    assert (loaded.resolution, loaded.frame_size, loaded.fit) == (16, (16, 16), DEFAULT_FIT)
    assert loaded.reset(seed=0).shape == (1, 16, 16, 3) and loaded.step([1]).shape == (1, 16, 16, 3)


def test_bench_measures_a_rectangular_world():
    from genie.bench import bench_play, bench_train_step

    tokenizer, lam, dynamics = tiny_models()

    def loss(model, video):
        recon, _, vq = model(video)
        return (recon - video).pow(2).mean() + vq

    row = bench_train_step("tokenizer", tokenizer, loss, 2, 4, WIDE, torch.device("cpu"), None, steps=1, warmup=1)
    assert row["train_frames_per_s"] > 0
    play = bench_play(WorldModel(tokenizer, lam, dynamics), batch_size=1, frames=2, warmup=1)
    assert play["play_fps"] > 0


# -------------------------------------------------------------------------------------------- fitting


@pytest.mark.parametrize("width, height", [(96, 64), (160, 90)])
def test_frames_of_another_aspect_are_fitted_not_squashed(width, height):
    source = disk_frames(height, width)
    crop = fit_frames(source, 32, "crop")[0]
    assert crop.shape == (32, 32, 3)
    box = disk_box(crop)
    assert abs(box[0] - box[1]) <= 1  # still round
    assert not (crop[:, :1] == (255, 0, 0)).all(-1).any()  # the side edges were cropped away
    squashed = disk_box(fit_frames(source, 32, "resize")[0])
    assert squashed[0] - squashed[1] >= 4  # squashing makes the disk an upright ellipse
    pad = fit_frames(source, 32, "pad")[0]
    box = disk_box(pad)
    assert abs(box[0] - box[1]) <= 1
    bar = (32 - round(height * 32 / width)) // 2  # black bars above and below a wider frame
    assert bar >= 4 and (pad[:bar] == 0).all() and (pad[-bar:] == 0).all() and pad[bar + 1 :, 0].any()


def test_a_frame_of_the_targets_aspect_is_only_resized():
    source = disk_frames(90, 160)
    assert fit_frames(source, (90, 160), "crop") is source  # already the target: untouched
    expected = fit_frames(source, (45, 80), "resize")
    for fit in ("crop", "pad"):
        np.testing.assert_array_equal(fit_frames(source, (45, 80), fit), expected)
    narrow = fit_frames(disk_frames(64, 96), (90, 160), "crop")  # 3:2 into 16:9: the middle rows
    assert narrow.shape == (6, 90, 160, 3)
    box = disk_box(narrow[0])
    assert abs(box[0] - box[1]) <= 2 and not (narrow[0, :1] == (0, 0, 255)).all(-1).any()  # round; top rows cropped


@pytest.mark.parametrize("fit", ["crop", "pad", "resize"])
def test_training_clips_and_the_frame_cache_fit_videos_by_data_fit(tmp_path, fit):
    data = tmp_path / "data"
    data.mkdir()
    write_video(data / "wide.mp4", disk_frames(90, 160, frames=6))
    write_video(data / "narrow.mp4", disk_frames(64, 96, frames=6))
    cfg = DataConfig(
        dir=str(data), seq_len=4, resolution=[36, 64], fit=fit, num_workers=0, val_fraction=0.5, frame_cache=True
    )
    module = VideoDataModule(cfg, run_dir=tmp_path / "run")
    module.setup()
    for clips in (module.train_set, module.val_set):
        video = clips[0]["video"].numpy()  # (T, H, W, 3)
        source = read_video(clips.videos[clips.clips[0][0]].path)
        assert video.shape == (4, 36, 64, 3)
        np.testing.assert_array_equal(video, fit_frames(source[:4], (36, 64), fit))
    meta = json.loads((tmp_path / "run" / "frame_cache" / "meta.json").read_text())
    assert meta["resolution"] == [36, 64] and meta["fit"] == fit


def test_prompts_and_infer_actions_fit_by_the_models_fit(tmp_path):
    write_video(tmp_path / "narrow.mp4", disk_frames(64, 96, frames=9))
    prompt = read_frames(tmp_path / "narrow.mp4", resolution=WIDE, last=2, fit="pad")
    assert prompt.shape == (2, *WIDE, 3) and (prompt[:, :, 0] == 0).all()  # bars left and right of a narrower frame
    _, lam, _ = tiny_models()
    actions = infer_actions(lam.eval(), read_video(tmp_path / "narrow.mp4"), fit="crop")
    assert len(actions) == 8 and all(0 <= a < 4 for a in actions)


# ----------------------------------------------------------------------------- train all at 160x90


TINY_PIPELINE = [
    *(
        f"{stage}.{key}"
        for stage in ("tokenizer", "lam", "dynamics")
        for key in (
            "train.max_steps=3",
            "train.warmup_steps=1",
            "train.val_every_steps=3",
            "train.sample_every_steps=3",
            "train.ckpt_every_steps=3",
            "train.logger=none",
            "data.batch_size=2",
            "data.num_workers=0",
            "data.max_val_clips=2",
            "model.dim=32",
            "model.num_heads=2",
        )
    ),
    "tokenizer.model.enc_depth=1",
    "tokenizer.model.dec_depth=1",
    "tokenizer.model.num_codes=32",
    "tokenizer.model.code_dim=8",
    "lam.model.enc_depth=1",
    "lam.model.dec_depth=1",
    "dynamics.model.depth=1",
]


@pytest.fixture(scope="module")
def wide_bundle(tmp_path_factory) -> Path:
    """The shipped 160x90 config, trained a few steps with tiny models on 160x90 sprite episodes."""
    from genie.data import sprites
    from genie.training.pipeline import train_all

    root = tmp_path_factory.mktemp("wide")
    sprites.generate(
        root / "data", episodes=6, cfg=sprites.SpriteWorldConfig(size=90, width=160, frames=20), progress=False
    )
    overrides = [f"run_dir={root / 'run'}", f"data_dir={root / 'data'}", *TINY_PIPELINE]
    bundle = train_all(CONFIGS / "sprites-wide" / "genie.yaml", overrides, progress=False)
    # the same command again resumes: every stage is found finished (its saved [90, 160] config matches)
    assert train_all(CONFIGS / "sprites-wide" / "genie.yaml", overrides, progress=False) == bundle
    return bundle


@pytest.mark.slow  # trains the tiny 160x90 pipeline in a fixture
def test_train_all_at_160x90_writes_a_bundle_at_that_aspect(wide_bundle):
    world = WorldModel.load(wide_bundle)
    assert world.frame_size == (90, 160) and world.fit == "crop" and world.dynamics.grid_size == (9, 16)
    assert world.prompt.shape[1:] == (90, 160, 3)
    assert world.reset(seed=0).shape == (1, 90, 160, 3) and world.step([1]).shape == (1, 90, 160, 3)


@pytest.mark.slow  # trains the tiny 160x90 pipeline in a fixture
def test_rollout_eval_and_infer_actions_accept_the_wide_bundle(wide_bundle, tmp_path, capsys):
    narrow = tmp_path / "narrow.mp4"  # 3:2, not the model's 16:9: cropped on the way in
    write_video(narrow, disk_frames(64, 96, frames=20))
    rollout = ["rollout", "--model", str(wide_bundle), "--prompt", str(narrow), "--out", str(tmp_path / "roll.mp4")]
    assert main([*rollout, *"--actions 0,1,2 --scale 1 --steps 2 --device cpu".split()]) == 0
    assert read_video(tmp_path / "roll.mp4").shape == (4, 90, 160, 3)

    episode = sorted((wide_bundle.parent.parent / "data").glob("*.mp4"))[0]
    infer = ["infer-actions", "--model", str(wide_bundle), str(episode), str(narrow), "--out", str(tmp_path / "a.json")]
    assert main(infer) == 0
    report = json.loads((tmp_path / "a.json").read_text())
    assert [len(v["actions"]) for v in report["videos"]] == [19, 19]

    heldout = tmp_path / "heldout"
    heldout.mkdir()
    write_video(heldout / "wide.mp4", read_video(episode))  # no action sidecar: no action scores to train
    write_video(heldout / "narrow.mp4", disk_frames(64, 96, frames=20))
    evaluate = ["eval", "--model", str(wide_bundle), "--data", str(heldout), "--out", str(tmp_path / "metrics.json")]
    assert main([*evaluate, *"--split all --max-clips 2 --horizon 2 --steps 2 --device cpu".split()]) == 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert np.isfinite(metrics["recon_psnr"]) and np.isfinite(metrics["rollout_psnr@1"])


@pytest.mark.slow  # trains the tiny 160x90 pipeline in a fixture
def test_play_serves_the_wide_frame_at_its_aspect(wide_bundle):
    import urllib.request

    from genie.play import make_server

    world = WorldModel.load(wide_bundle)
    server = make_server(world, None, "127.0.0.1", 0)
    try:
        import threading

        threading.Thread(target=server.serve_forever, daemon=True).start()
        with urllib.request.urlopen(server.url + "info", timeout=30) as r:
            info = json.loads(r.read())
        assert (info["height"], info["width"], info["resolution"]) == (90, 160, [90, 160])
        page = _browser_screen_size(server.url)
        if page is not None:
            width, height = page
            assert abs(width / height - 160 / 90) < 0.03
    finally:
        server.shutdown()
        server.server_close()


def _browser_screen_size(url: str) -> tuple[float, float] | None:
    """(width, height) in CSS pixels of the page's frame, drawn by a headless chromium; None without one."""
    if not Path("/usr/bin/chromium").exists():
        return None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path="/usr/bin/chromium", args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 820})
            page.goto(url)
            page.wait_for_function("document.getElementById('frame-index').textContent === '0'")
            box = page.locator("#frame").bounding_box()
            return box["width"], box["height"]
        finally:
            browser.close()
