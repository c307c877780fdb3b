"""The data pipeline (genie/data/clips.py) and the sprite-world generator, as docs/data.md specifies."""

from __future__ import annotations

import json
import logging
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from genie.config import DataConfig
from genie.data import clips as data_mod
from genie.data import sprites
from genie.data.clips import (
    INDEX_FILE,
    DataError,
    VideoClips,
    discover_videos,
    index_videos,
    split_by_file,
    usable_videos,
)
from genie.data.datamodule import VideoDataModule
from genie.data.recording import DatasetExistsError
from genie.data.video import read_video, write_video


def random_video(path: Path, frames: int, size: int = 32, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    return write_video(path, rng.integers(0, 256, (frames, size, size, 3), dtype=np.uint8))


def copy_episodes(src: Path, dst: Path, count: int) -> Path:
    """The first `count` sprite episodes (videos and sidecars) in a fresh folder the test may change."""
    dst.mkdir(parents=True, exist_ok=True)
    for video in sorted(src.glob("*.mp4"))[:count]:
        shutil.copy(video, dst / video.name)
        shutil.copy(data_mod.actions_path(video), dst / data_mod.actions_path(video).name)
    return dst


def test_discovers_videos_recursively_in_stable_order(tmp_path):
    random_video(tmp_path / "b" / "deep" / "z.mkv", 4)
    random_video(tmp_path / "a.mp4", 4)
    random_video(tmp_path / "b" / "c.AVI", 4)
    (tmp_path / "notes.txt").write_text("not a video")
    np.save(tmp_path / "a.actions.npy", np.zeros(3, dtype=np.int64))
    found = [p.relative_to(tmp_path).as_posix() for p in discover_videos(tmp_path)]
    assert found == ["a.mp4", "b/c.AVI", "b/deep/z.mkv"]


def test_clips_are_uint8_frames_with_int64_actions(sprite_data):
    cfg = DataConfig(dir=str(sprite_data), seq_len=8, resolution=32, batch_size=4, num_workers=0)
    module = VideoDataModule(cfg)
    batch = next(iter(module.train_dataloader()))
    assert batch["video"].shape == (4, 8, 32, 32, 3) and batch["video"].dtype == torch.uint8
    assert batch["actions"].shape == (4, 7) and batch["actions"].dtype == torch.int64
    assert ((batch["actions"] >= 0) & (batch["actions"] < len(sprites.ACTION_NAMES))).all()
    # 48-frame episodes, 8-frame clips every 4 frames: 11 clips per training video
    assert len(module.train_set) == 11 * len(module.train_set.videos)


# 16, 24 and 48 are sizes at which decord's own resize fails (dmlc/decord#336); genie resizes itself
@pytest.mark.parametrize("resolution", [64, 16, 24, 48])
def test_clips_are_resized_to_the_resolution(sprite_data, resolution):
    videos = usable_videos(sprite_data, min_frames=8, progress=False)
    clip = VideoClips(videos[:1], seq_len=4, resolution=resolution)[0]
    assert clip["video"].shape == (4, resolution, resolution, 3)


def test_frame_stride_takes_every_nth_frame(sprite_data):
    videos = usable_videos(sprite_data, min_frames=8, progress=False)[:1]
    clips = VideoClips(videos, seq_len=5, resolution=32, frame_stride=3, clip_step=2)
    full = read_video(videos[0].path)
    item = clips[1]
    assert int(item["start"]) == 2
    np.testing.assert_array_equal(clips.frame_indices(1), [2, 5, 8, 11, 14])
    np.testing.assert_array_equal(item["video"].numpy(), full[[2, 5, 8, 11, 14]])  # lossless videos: exact
    # the last clip still fits: its last frame is inside the video
    assert clips.frame_indices(len(clips) - 1)[-1] < videos[0].num_frames


def test_workers_start_after_the_main_process_read_a_clip(sprite_data):
    # forked workers inherit the main process's decord readers; destroying one in a worker hung forever
    script = f"""
import torch
from genie.config import DataConfig
from genie.data.datamodule import VideoDataModule
m = VideoDataModule(DataConfig(dir={str(sprite_data)!r}, seq_len=4, resolution=32, num_workers=0))
m.setup()
first = m.train_set[0]["video"]
batch = next(iter(torch.utils.data.DataLoader(m.train_set, batch_size=4, num_workers=2)))
assert torch.equal(batch["video"][0], first)
print("ok")
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_split_by_file_is_deterministic_and_disjoint(sprite_data):
    videos = usable_videos(sprite_data, min_frames=8, progress=False)
    train, val = split_by_file(videos, sprite_data, val_fraction=0.25, seed=0)
    again = split_by_file(list(reversed(videos)), sprite_data, val_fraction=0.25, seed=0)
    assert (train, val) == again
    assert len(val) == 3 and len(train) == len(videos) - 3
    assert {v.path for v in train}.isdisjoint(v.path for v in val)
    assert {v.path for v in train} | {v.path for v in val} == {v.path for v in videos}
    other_seed = split_by_file(videos, sprite_data, val_fraction=0.25, seed=1)[1]
    assert {v.path for v in other_seed} != {v.path for v in val}


def test_corrupt_and_empty_videos_are_skipped_and_counted(sprite_data, tmp_path, caplog):
    root = copy_episodes(sprite_data, tmp_path / "data", 2)
    (root / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    (root / "empty.mp4").touch()
    with caplog.at_level(logging.WARNING, logger="genie.data"):
        videos = usable_videos(root, min_frames=8, progress=False)
    assert sorted(v.path.name for v in videos) == ["episode_00000.mp4", "episode_00001.mp4"]
    lines = caplog.messages
    assert sum("broken.mp4" in m and "cannot decode" in m for m in lines) == 1
    assert sum("empty.mp4" in m and "empty file" in m for m in lines) == 1
    assert any("skipped 2 of 4 videos" in m for m in lines)


def test_too_short_video_is_skipped(tmp_path, caplog):
    random_video(tmp_path / "long.mp4", 10)
    random_video(tmp_path / "short.mp4", 3)
    with caplog.at_level(logging.WARNING, logger="genie.data"):
        videos = usable_videos(tmp_path, min_frames=8, progress=False)
    assert [v.path.name for v in videos] == ["long.mp4"]
    assert any("short.mp4" in m and "too short (3 frames" in m for m in caplog.messages)


def test_clip_actions_are_the_sidecar_actions_of_its_transitions(sprite_data):
    videos = usable_videos(sprite_data, min_frames=8, progress=False)[:2]
    clips = VideoClips(videos, seq_len=6, resolution=32, clip_step=5)
    for index in (0, 3, len(clips) - 1):
        item = clips[index]
        truth = np.load(data_mod.actions_path(videos[int(item["video_index"])].path))
        start = int(item["start"])
        np.testing.assert_array_equal(item["actions"].numpy(), truth[start : start + 5])


def test_strided_clip_actions_are_known_only_when_unambiguous(sprite_data):
    videos = usable_videos(sprite_data, min_frames=8, progress=False)[:1]
    truth = np.load(data_mod.actions_path(videos[0].path))
    clips = VideoClips(videos, seq_len=4, resolution=32, frame_stride=2)
    for index in range(len(clips)):
        idx = clips.frame_indices(index)
        for i, action in enumerate(clips[index]["actions"].numpy()):
            span = truth[idx[i] : idx[i + 1]]
            assert action == (span[0] if (span == span[0]).all() else -1)


def test_video_without_sidecar_has_unknown_actions(tmp_path):
    random_video(tmp_path / "plain.mp4", 6)
    clips = VideoClips(usable_videos(tmp_path, min_frames=4, progress=False), seq_len=4, resolution=32)
    assert (clips[0]["actions"] == -1).all()


def test_no_usable_videos_is_an_error_naming_the_folder(tmp_path):
    with pytest.raises(DataError, match=str(tmp_path / "missing")):
        usable_videos(tmp_path / "missing", min_frames=4)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path / 'empty'} holds no videos"):
        usable_videos(tmp_path / "empty", min_frames=4)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.mp4").write_bytes(b"not a video")
    random_video(tmp_path / "bad" / "short.mp4", 2)
    with pytest.raises(DataError, match=f"{tmp_path / 'bad'}: none of its 2 videos is usable"):
        usable_videos(tmp_path / "bad", min_frames=4, progress=False)


def test_index_cache_is_reused_and_invalidated_when_a_file_changes(tmp_path, monkeypatch):
    random_video(tmp_path / "a.mp4", 5)
    random_video(tmp_path / "b.mp4", 6)
    probed = []
    real_probe = data_mod._probe
    monkeypatch.setattr(data_mod, "_probe", lambda path: probed.append(path.name) or real_probe(path))

    first = index_videos(tmp_path, progress=False)
    assert sorted(probed) == ["a.mp4", "b.mp4"] and (tmp_path / INDEX_FILE).is_file()
    assert first[tmp_path / "b.mp4"]["num_frames"] == 6

    probed.clear()
    assert index_videos(tmp_path, progress=False) == first
    assert probed == []  # nothing changed: every entry comes from the cache

    random_video(tmp_path / "b.mp4", 9, seed=1)
    again = index_videos(tmp_path, progress=False)
    assert probed == ["b.mp4"]
    assert again[tmp_path / "b.mp4"]["num_frames"] == 9
    assert json.loads((tmp_path / INDEX_FILE).read_text())["files"]["b.mp4"]["num_frames"] == 9


def test_sprite_generator_writes_a_readable_deterministic_folder(tmp_path):
    cfg = sprites.SpriteWorldConfig(frames=12)
    first = sprites.generate(tmp_path / "one", episodes=2, seed=3, cfg=cfg, progress=False)
    second = sprites.generate(tmp_path / "two", episodes=2, seed=3, cfg=cfg, progress=False)
    assert [p.name for p in first] == ["episode_00000.mp4", "episode_00001.mp4"]
    for a, b in zip(first, second):
        frames = read_video(a)
        assert frames.shape == (12, 32, 32, 3)
        np.testing.assert_array_equal(frames, read_video(b))
        actions = np.load(data_mod.actions_path(a))
        assert actions.dtype == np.int64 and actions.shape == (11,)
        np.testing.assert_array_equal(actions, np.load(data_mod.actions_path(b)))
    meta = json.loads((tmp_path / "one" / "dataset.json").read_text())
    assert meta["generator"] == "sprites" and meta["episodes"] == 2 and meta["seed"] == 3
    other = sprites.generate(tmp_path / "three", episodes=1, seed=4, cfg=cfg, progress=False)
    assert not np.array_equal(read_video(other[0]), read_video(first[0]))


def test_sprite_generator_refuses_to_overwrite_unless_asked(tmp_path):
    cfg = sprites.SpriteWorldConfig(frames=6)
    sprites.generate(tmp_path, episodes=2, seed=0, cfg=cfg, progress=False)
    with pytest.raises(DatasetExistsError, match="already holds 2 videos"):
        sprites.generate(tmp_path, episodes=1, seed=0, cfg=cfg, progress=False)
    assert len(discover_videos(tmp_path)) == 2
    sprites.generate(tmp_path, episodes=1, seed=0, cfg=cfg, progress=False, overwrite=True)
    assert [p.name for p in discover_videos(tmp_path)] == ["episode_00000.mp4"]
    assert not (tmp_path / "episode_00001.actions.npy").exists()


# ------------------------------------------------------------------------------------- frame cache


@pytest.mark.parametrize("resolution, frame_stride", [(32, 1), (24, 2)])
def test_frame_cache_gives_the_clips_the_video_loader_gives(sprite_data, tmp_path, resolution, frame_stride):
    from genie.data.frame_cache import CachedClips

    cfg = DataConfig(
        dir=str(sprite_data),
        seq_len=4,
        frame_stride=frame_stride,
        clip_step=3,
        resolution=resolution,
        num_workers=2,
        frame_cache=True,
    )
    plain = VideoDataModule(DataConfig(**{**cfg.__dict__, "frame_cache": False}), run_dir=tmp_path)
    cached = VideoDataModule(cfg, run_dir=tmp_path)
    plain.setup(), cached.setup()
    assert isinstance(cached.train_set, CachedClips) and not isinstance(plain.train_set, CachedClips)
    assert len(cached.train_set) == len(plain.train_set) > 50
    # through worker processes (each maps the file itself), batched as training reads them; first, as in
    # training: the main process has not read a clip (decord readers must not be inherited by a fork)
    loader = lambda clips: torch.utils.data.DataLoader(clips, batch_size=8, num_workers=2)  # noqa: E731
    for a, b in zip(loader(plain.train_set), loader(cached.train_set)):
        assert torch.equal(a["video"], b["video"]) and torch.equal(a["actions"], b["actions"])
    for i in range(0, len(plain.train_set), 7):
        a, b = plain.train_set[i], cached.train_set[i]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), f"clip {i} differs"
    meta = json.loads((tmp_path / "frame_cache" / "meta.json").read_text())
    assert meta["num_frames"] == sum(v.num_frames for v in plain.train_set.videos)
    assert cached.val_set.__class__ is VideoClips  # validation still decodes video


def test_frame_cache_is_reused_and_rebuilt_when_a_video_changes(sprite_data, tmp_path):
    data = copy_episodes(sprite_data, tmp_path / "data", 3)
    cfg = DataConfig(dir=str(data), seq_len=4, resolution=32, num_workers=0, frame_cache=True)
    VideoDataModule(cfg, run_dir=tmp_path / "run").setup()
    frames = tmp_path / "run" / "frame_cache" / "frames.npy"
    built = frames.stat().st_mtime_ns
    VideoDataModule(cfg, run_dir=tmp_path / "run").setup()
    assert frames.stat().st_mtime_ns == built  # reused
    video = sorted(data.glob("*.mp4"))[0]
    write_video(video, read_video(video)[::-1].copy())  # same length, other frames
    module = VideoDataModule(cfg, run_dir=tmp_path / "run")
    module.setup()
    assert frames.stat().st_mtime_ns != built
    first = [i for i, (v, _) in enumerate(module.train_set.clips) if module.train_set.videos[v].path == video][0]
    expected = read_video(video)[module.train_set.frame_indices(first)]
    np.testing.assert_array_equal(module.train_set[first]["video"].numpy(), expected)


def test_frame_cache_follows_the_split_and_clears_a_killed_build(sprite_data, tmp_path):
    cfg = DataConfig(dir=str(sprite_data), seq_len=4, resolution=32, num_workers=0, frame_cache=True)
    leftover = tmp_path / f"frame_cache.tmp-{socket.gethostname()}-999999999"  # a build killed mid-way
    leftover.mkdir()
    module = VideoDataModule(cfg, run_dir=tmp_path)
    module.setup()
    assert not leftover.exists()
    meta = json.loads((tmp_path / "frame_cache" / "meta.json").read_text())
    other = VideoDataModule(DataConfig(**{**cfg.__dict__, "val_fraction": 0.4}), run_dir=tmp_path)
    other.setup()
    assert len(other.train_set.videos) < len(module.train_set.videos)
    assert json.loads((tmp_path / "frame_cache" / "meta.json").read_text())["num_frames"] < meta["num_frames"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frame_cache"]


def test_frame_cache_without_disk_room_is_a_clear_error(sprite_data, tmp_path, monkeypatch):
    import genie.data.frame_cache

    monkeypatch.setattr(
        genie.data.frame_cache.shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 1000, 1000)
    )
    cfg = DataConfig(dir=str(sprite_data), seq_len=4, resolution=32, num_workers=0, frame_cache=True)
    with pytest.raises(DataError, match="frame cache needs .* set data.frame_cache=false"):
        VideoDataModule(cfg, run_dir=tmp_path).setup()
    assert not (tmp_path / "frame_cache").exists()


def test_pixel_stages_read_the_frame_cache_of_their_run_folder(tmp_path):
    from genie.training.lam_stage import LAMModule, LAMRunConfig
    from genie.training.tokenizer_stage import TokenizerModule, TokenizerRunConfig

    for run_config, module in ((TokenizerRunConfig, TokenizerModule), (LAMRunConfig, LAMModule)):
        cfg = run_config(run_dir=str(tmp_path / module.stage), data=DataConfig(frame_cache=True))
        assert module.make_datamodule(cfg).frame_cache_dir == tmp_path / module.stage / "frame_cache"
        cfg.data.frame_cache = False
        assert module.make_datamodule(cfg).frame_cache_dir is None
