"""The dynamics stage's token cache: the same ids and latent actions it would compute itself, rebuilt when
what it depends on changes, and never mistaken for a finished one while being written."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from einops import rearrange
from tiny import tiny_lam, tiny_tokenizer

from genie.config import DataConfig
from genie.data.clips import VideoClips, usable_videos
from genie.data.token_cache import META_FILE, TokenClips, TokenDataModule, ensure_token_cache
from genie.models.pixels import video_to_float


def frozen_models(seed: int = 0):
    torch.manual_seed(seed)
    return tiny_tokenizer().eval(), tiny_lam().eval()


@pytest.fixture(scope="module")
def clips(sprite_data) -> VideoClips:
    return VideoClips(
        usable_videos(sprite_data, min_frames=8, progress=False)[:4], seq_len=8, resolution=32, clip_step=4
    )


def test_cached_clips_equal_what_the_frozen_models_compute(clips, tmp_path):
    tokenizer, lam = frozen_models()
    cache = ensure_token_cache(
        clips, tokenizer, lam, tmp_path / "cache", torch.device("cpu"), batch_size=5, num_workers=0, progress=False
    )
    cached = TokenClips(cache)
    assert len(cached) == len(clips) > 10
    assert cached.ids.dtype == np.uint16 and cached.actions.dtype == np.uint8
    for index in (0, 7, len(clips) - 1):
        video = video_to_float(clips[index]["video"][None])
        ids = rearrange(tokenizer.encode(video), "b t h w -> b t (h w)")[0]
        item = cached[index]
        assert torch.equal(item["ids"], ids)
        assert torch.equal(item["latent_actions"], lam.infer_actions(video)[0])
    # the tokens are not trivial: a random tokenizer still uses many codes on real frames
    assert len(np.unique(cached.ids)) > 5


def test_cache_is_reused_and_rebuilt_when_the_models_change(clips, tmp_path):
    tokenizer, lam = frozen_models()
    args = dict(device=torch.device("cpu"), batch_size=8, num_workers=0, progress=False)
    cache = ensure_token_cache(clips, tokenizer, lam, tmp_path / "cache", **args)
    built = json.loads((cache / META_FILE).read_text())["weights"]
    stamp = (cache / "ids.npy").stat().st_mtime_ns
    ensure_token_cache(clips, tokenizer, lam, tmp_path / "cache", **args)
    assert (cache / "ids.npy").stat().st_mtime_ns == stamp  # reused, not rewritten
    other_tokenizer, _ = frozen_models(seed=1)
    ensure_token_cache(clips, other_tokenizer, lam, tmp_path / "cache", **args)
    assert json.loads((cache / META_FILE).read_text())["weights"] != built
    assert not list(tmp_path.glob("cache.tmp-*"))  # the build folder was moved into place


def test_a_cache_without_meta_is_rebuilt(clips, tmp_path):
    tokenizer, lam = frozen_models()
    args = dict(device=torch.device("cpu"), batch_size=8, num_workers=0, progress=False)
    cache = ensure_token_cache(clips, tokenizer, lam, tmp_path / "cache", **args)
    (cache / META_FILE).unlink()  # as if the build had been killed before it finished
    np.save(cache / "ids.npy", np.zeros((1, 8, 64), dtype=np.uint16))
    ensure_token_cache(clips, tokenizer, lam, tmp_path / "cache", **args)
    assert len(TokenClips(cache)) == len(clips)


def test_token_datamodule_streams_the_same_clips_as_the_video_one(sprite_data, tmp_path):
    tokenizer, lam = frozen_models()
    cfg = DataConfig(dir=str(sprite_data), seq_len=8, resolution=32, batch_size=4, num_workers=0)
    datamodule = TokenDataModule(cfg, tmp_path / "cache")
    datamodule.build_cache(tokenizer, lam, torch.device("cpu"), "32-true", progress=False)
    datamodule.setup()
    tokens, videos = (
        iter(datamodule.train_dataloader()),
        iter(datamodule._loader(datamodule.train_set, datamodule.train_sampler())),
    )
    for _ in range(2):
        token_batch, video_batch = next(tokens), next(videos)
        ids = rearrange(tokenizer.encode(video_to_float(video_batch["video"])), "b t h w -> b t (h w)")
        assert torch.equal(token_batch["ids"], ids)
