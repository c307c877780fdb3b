"""The video tokenizer (genie/models/tokenizer.py) and its training stage (genie/training/tokenizer_stage.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import tiny
import torch

from genie.config import ConfigError, DataConfig, TrainConfig, load_config
from genie.data.datamodule import VideoDataModule
from genie.metrics import psnr
from genie.models.checkpoint import RunError, load_checkpoint
from genie.models.pixels import video_to_float
from genie.models.tokenizer import DecodeStream, TokenizerConfig, VideoTokenizer, load_tokenizer
from genie.training.tokenizer_stage import TokenizerModule, TokenizerRunConfig
from genie.training.trainer import train_stage

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

MAX_FRAMES = 6  # the tiny tokenizers' window here


def tiny_tokenizer(seed: int = 0, **fields) -> VideoTokenizer:
    torch.manual_seed(seed)
    return tiny.tiny_tokenizer(max_frames=MAX_FRAMES, **fields).eval()


def run_config(run_dir: Path, data_dir: Path, max_steps: int, **train) -> TokenizerRunConfig:
    return TokenizerRunConfig(
        run_dir=str(run_dir),
        data=DataConfig(dir=str(data_dir), seq_len=4, resolution=32, batch_size=4, num_workers=0, max_val_clips=32),
        model=tiny.tokenizer_config(
            max_frames=MAX_FRAMES, num_codes=256, dim=64, num_heads=4, code_dim=16, restart_every=20
        ),
        train=TrainConfig(
            max_steps=max_steps,
            lr=3e-3,
            warmup_steps=10,
            val_every_steps=max_steps,
            log_every_steps=10,
            sample_every_steps=max_steps,
            ckpt_every_steps=max_steps,
            ckpt_every_minutes=0,
            logger="csv",
            accelerator="cpu",
            **train,
        ),
    )


def val_psnr(model: VideoTokenizer, cfg: TokenizerRunConfig) -> float:
    module = VideoDataModule(cfg.data)
    scores = []
    with torch.no_grad():
        for batch in module.val_dataloader():
            video = video_to_float(batch["video"])
            scores.append(psnr(model.decode(model.encode(video)), video))
    return float(torch.cat(scores).mean())


# ---------------------------------------------------------------------------------------- model


def test_encode_gives_a_grid_of_ids_per_frame_and_decode_gives_frames():
    model = tiny_tokenizer()
    video = torch.rand(2, 5, 3, 32, 32)
    ids = model.encode(video)
    assert model.grid == 8 and model.num_codes == 64
    assert ids.shape == (2, 5, 8, 8) and ids.dtype == torch.long
    assert 0 <= ids.min() and ids.max() < 64
    frames = model.decode(ids)
    assert frames.shape == (2, 5, 3, 32, 32) and 0 <= frames.min() and frames.max() <= 1
    recon, forward_ids, vq_loss = model(video)
    assert recon.shape == video.shape and vq_loss.ndim == 0
    assert torch.equal(forward_ids, ids)
    torch.testing.assert_close(recon, frames)


def test_tokens_and_reconstruction_of_a_frame_ignore_later_frames():
    model = tiny_tokenizer()
    video = torch.rand(1, 6, 3, 32, 32)
    changed = video.clone()
    changed[:, 3:] = torch.rand_like(changed[:, 3:])
    ids, ids_changed = model.encode(video), model.encode(changed)
    assert torch.equal(ids[:, :3], ids_changed[:, :3])
    assert not torch.equal(ids[:, 3:], ids_changed[:, 3:])  # the later frames did change
    frames, frames_changed = model.decode(ids), model.decode(ids_changed)
    torch.testing.assert_close(frames[:, :3], frames_changed[:, :3], rtol=0, atol=1e-6)
    assert not torch.allclose(frames[:, 3:], frames_changed[:, 3:])


def test_a_per_patch_encoder_gives_unchanged_patches_the_same_id_at_every_frame_and_place():
    # enc_depth 0: the id of a patch is a function of its pixels alone (issue 13: copyable tokens)
    tok = tiny.tiny_tokenizer(enc_depth=0).eval()
    frame = torch.rand(3, 32, 32)
    frame[:, :, 16:] = frame[:, :, :16]  # the right half repeats the left half
    video = frame.repeat(1, 6, 1, 1, 1)
    video[0, 3:, :, :4, :4] = 1 - video[0, 3:, :, :4, :4]  # one patch changes from frame 3 on
    ids = tok.encode(video)[0]  # (T, 8, 8)
    assert (ids[1:, 1:] == ids[:-1, 1:]).all() and (ids[1:, 0, 1:] == ids[:-1, 0, 1:]).all()
    assert (ids[:, :, 4:] == ids[:, :, :4])[:, 1:].all()
    # with encoder blocks, the same patch takes the context into account
    assert not hasattr(tok.patch_embed, "pos_time") and hasattr(tiny.tiny_tokenizer().patch_embed, "pos_time")


def test_clips_longer_than_max_frames_use_a_window_ending_at_each_frame():
    model = tiny_tokenizer()
    video = torch.rand(1, 9, 3, 32, 32)  # max_frames is 6
    ids = model.encode(video)
    assert ids.shape == (1, 9, 8, 8)
    assert torch.equal(ids[:, :6], model.encode(video[:, :6]))
    assert torch.equal(ids[:, 8], model.encode(video[:, 3:9])[:, -1])
    frames = model.decode(ids)
    torch.testing.assert_close(frames[:, 7], model.decode(ids[:, 2:8])[:, -1])
    with pytest.raises(ValueError, match="longer than max_frames=6"):
        model(video)


def deep_decoder_tokenizer() -> VideoTokenizer:
    return tiny_tokenizer(dec_depth=2)  # two blocks: per-block caches


@pytest.mark.parametrize("slide, window", [(1, 6), (2, 6), (5, 6), (9, 6), (2, 3), (1, 1)])
def test_decode_stream_gives_each_frame_as_decoding_its_window_would(slide, window):
    model = deep_decoder_tokenizer()
    ids = torch.randint(0, 64, (2, 20, 8, 8))
    stream = DecodeStream(model, ids[:, :3], slide=slide, window=window)
    start = max(0, 3 - window)
    torch.testing.assert_close(stream.frame, model.decode(ids[:, start:3])[:, -1], rtol=0, atol=1e-5)
    dropped = min(slide, max(1, window - 1))  # a slide is kept below the window (a 1-frame window keeps nothing)
    lengths = []  # the window: frames start..t
    for t in range(3, 20):
        if t - start >= window:  # full: the oldest frames go
            start = t - window + dropped
        frame = stream.push(ids[:, t])
        lengths.append(t + 1 - start)
        torch.testing.assert_close(frame, model.decode(ids[:, start : t + 1])[:, -1], rtol=0, atol=1e-5)
    assert max(lengths) == window and min(lengths[window:]) == window - dropped + 1  # it slid


def test_compiled_decode_stream_gives_the_eager_frames():
    model = deep_decoder_tokenizer()
    ids = torch.randint(0, 64, (1, 9, 8, 8))
    eager = DecodeStream(model, ids[:, :1], slide=3)
    expected = [eager.push(ids[:, t]) for t in range(1, 9)]
    model.compile_decoding()
    compiled = DecodeStream(model, ids[:, :1], slide=3)
    for t in range(1, 9):  # cache lengths 1..5, then one slide
        torch.testing.assert_close(compiled.push(ids[:, t]), expected[t - 1], rtol=0, atol=1e-5)


def test_wrong_frame_size_is_a_clear_error():
    with pytest.raises(ValueError, match=r"expected video \(B, T, 3, 32, 32\)"):
        tiny_tokenizer().encode(torch.rand(1, 2, 3, 64, 64))


def test_run_config_takes_resolution_and_clip_length_from_the_data():
    # model fields left at their defaults are derived from the data; one the user set is kept, never overwritten
    cfg = TokenizerRunConfig(data=DataConfig(resolution=32, seq_len=20))
    assert cfg.model.resolution == 32 and cfg.model.max_frames == 20
    cfg = TokenizerRunConfig(data=DataConfig(resolution=32, seq_len=12), model=TokenizerConfig(max_frames=24))
    assert cfg.model.max_frames == 24
    with pytest.raises(ConfigError, match="divisible by model.patch 4"):
        TokenizerRunConfig(data=DataConfig(resolution=30))


@pytest.mark.parametrize("name", ["sprites", "coinrun"])
def test_shipped_configs_load(name):
    cfg = load_config(TokenizerRunConfig, CONFIGS / name / "tokenizer.yaml")
    assert cfg.run_dir == f"runs/{name}/tokenizer"
    assert cfg.model.max_frames >= cfg.data.seq_len
    assert cfg.model.resolution == cfg.data.resolution


# ------------------------------------------------------------------------------------- training


@pytest.fixture(scope="module")
def trained(sprite_data, tmp_path_factory):
    """A short CPU run on the sprite world, with the untrained model's val PSNR for comparison (about 25 s: the
    tests that use it are marked slow)."""
    cfg = run_config(tmp_path_factory.mktemp("tokenizer") / "run", sprite_data, max_steps=400)
    torch.manual_seed(cfg.train.seed)
    before = val_psnr(TokenizerModule(cfg).model.eval(), cfg)
    run_dir = train_stage(TokenizerModule, cfg, progress=False)
    return cfg, run_dir, before


@pytest.mark.slow
def test_training_on_sprites_raises_reconstruction_psnr(trained):
    cfg, run_dir, before = trained
    after = val_psnr(load_tokenizer(run_dir), cfg)
    # measured on a 2-core CPU: 8.7 dB untrained, 22.5-23.1 dB after 400 steps (seeds 0-2)
    assert after > before + 10 and after > 20, (before, after)
    metrics = (run_dir / "logs" / "version_0" / "metrics.csv").read_text().splitlines()[0].split(",")
    logged = {"val/recon_psnr", "val/recon_ssim", "val/codebook_usage", "val/codebook_perplexity", "train/loss"}
    assert logged | {"train/mse", "train/vq_loss", "train/device/items_per_sec"} <= set(metrics)
    # validate/: Lightning's ThroughputMonitor during validation
    prefixes = ("train/", "val/", "validate/")
    assert all(name.startswith(prefixes) for name in metrics if name not in ("step", "epoch")), metrics
    assert sorted(p.suffix for p in (run_dir / "samples").iterdir()) == [".gif", ".png"]


@pytest.mark.slow
def test_checkpoint_is_self_describing_and_loads_weights_only(trained):
    cfg, run_dir, _ = trained
    ckpt_path = run_dir / "checkpoints" / "last.ckpt"
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["stage"] == "tokenizer"
    assert ckpt["hyper_parameters"]["config"]["model"]["dim"] == cfg.model.dim
    from_file, from_folder = load_tokenizer(ckpt_path), load_tokenizer(run_dir)
    assert not from_file.training
    video = torch.rand(1, 3, 3, 32, 32)
    assert torch.equal(from_file.encode(video), from_folder.encode(video))


@pytest.mark.slow
def test_load_tokenizer_reads_a_world_model_bundle(trained, tmp_path):
    _, run_dir, _ = trained
    model = load_tokenizer(run_dir)
    bundle = {
        "format": "genie-bundle",
        "version": 1,
        "tokenizer": {"config": dataclasses.asdict(model.cfg), "state_dict": model.state_dict()},
    }
    torch.save(bundle, tmp_path / "world_model.pt")
    loaded = load_tokenizer(tmp_path / "world_model.pt")
    video = torch.rand(1, 3, 3, 32, 32)
    assert torch.equal(loaded.encode(video), model.encode(video))


def test_load_tokenizer_refuses_a_checkpoint_of_another_stage(tmp_path):
    torch.save({"hyper_parameters": {"stage": "lam", "config": {}}, "state_dict": {}}, tmp_path / "lam.ckpt")
    with pytest.raises(RunError, match="is a lam checkpoint, expected a tokenizer checkpoint"):
        load_tokenizer(tmp_path / "lam.ckpt")
    with pytest.raises(RunError, match="not found"):
        load_tokenizer(tmp_path / "nothing")


def test_resuming_continues_the_step_count(sprite_data, tmp_path):
    starts = []

    class RecordingTask(TokenizerModule):
        def on_train_start(self):
            starts.append(self.global_step)

    run_dir = tmp_path / "run"
    train_stage(RecordingTask, run_config(run_dir, sprite_data, max_steps=4), progress=False)
    assert load_checkpoint(run_dir)["global_step"] == 4
    train_stage(RecordingTask, run_config(run_dir, sprite_data, max_steps=8), progress=False)
    assert starts == [0, 4]
    assert load_checkpoint(run_dir)["global_step"] == 8
