"""Evaluation metrics against reference values, and measures that must fail on broken worlds (no training here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from genie.data import sprites
from genie.data.heldout import fingerprint, select_videos
from genie.metrics import bootstrap_interval, normalized_mutual_info, player_position, psnr, ssim
from genie.persistence import degenerate_frames, frame_statistics, reference_bounds


def test_psnr_of_a_known_error_and_ssim_of_identical_images():
    target = torch.full((2, 3, 16, 16), 0.5)
    assert torch.allclose(psnr(target + 0.1, target), torch.full((2,), 20.0), atol=1e-4)  # MSE 0.01 -> 20 dB
    image = torch.rand(2, 3, 16, 16)
    assert torch.allclose(ssim(image, image), torch.ones(2), atol=1e-5)
    assert (ssim(torch.rand(2, 3, 16, 16), image) < 0.2).all()


def test_nmi_is_one_for_relabelled_and_near_zero_for_independent_labels():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, 4000)
    assert normalized_mutual_info(a, (a + 3) % 5) == pytest.approx(1.0, abs=1e-6)
    assert normalized_mutual_info(a, rng.integers(0, 5, 4000)) < 0.01


def test_bootstrap_interval_holds_the_mean_and_narrows_with_more_clips():
    rng = np.random.default_rng(0)
    small, large = rng.normal(1.0, 1.0, 20), rng.normal(1.0, 1.0, 2000)
    lo_s, hi_s = bootstrap_interval(small)
    lo_l, hi_l = bootstrap_interval(large)
    assert lo_s < small.mean() < hi_s and lo_l < 1.0 < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 5
    assert bootstrap_interval([0.0] * 10) == (0.0, 0.0)
    assert np.isnan(bootstrap_interval([1.0])[0])


def test_player_position_finds_the_drawn_player_and_notices_when_it_is_gone():
    rng = np.random.default_rng(0)
    frames, _ = sprites.sample_episode(rng, sprites.SpriteWorldConfig())
    video = torch.from_numpy(frames).permute(0, 3, 1, 2).float() / 255
    pos, found = player_position(video)
    assert found.all()
    steps = (pos[1:] - pos[:-1]).norm(dim=-1)
    assert set(np.round(steps.numpy(), 3)) <= {0.0, 2.0}  # the player moves 2 px a step or stands
    frame = sprites._background(rng, 32, 32)
    sprites._draw_player(frame, 10, 20, 6)
    pos, found = player_position(torch.from_numpy(frame).permute(2, 0, 1).float() / 255)
    assert found and torch.allclose(pos, torch.tensor([12.5, 22.5]))
    _, found = player_position(torch.from_numpy(sprites._background(rng, 32, 32)).permute(2, 0, 1).float() / 255)
    assert not found


@pytest.fixture(scope="module")
def real_clips():
    rng = np.random.default_rng(1)
    return [
        torch.from_numpy(sprites.sample_episode(rng, sprites.SpriteWorldConfig())[0]).permute(0, 3, 1, 2).float() / 255
        for _ in range(8)
    ]


def test_collapse_measure_passes_real_video_and_flags_blank_noise_and_frozen_frames(real_clips):
    bounds = reference_bounds(real_clips[:4])
    for clip in real_clips[4:]:  # other episodes than the reference
        assert degenerate_frames(frame_statistics(clip), bounds).mean() < 0.05
    clip = real_clips[4]
    blank = torch.full_like(clip, 0.4)
    noise = torch.rand_like(clip)
    frozen = clip[:1].expand_as(clip)
    # frozen but for a flicker of 3 pixels (motion 0.0023: under a third of the real 1st percentile, 0.0084, but above
    # the quarter that was the margin before): what a greedy rollout that has settled on one frame looks like
    nearly_frozen = frozen.clone()
    nearly_frozen[1::2, :, 0, :3] = 1 - nearly_frozen[1::2, :, 0, :3].round()
    for name, broken in (("blank", blank), ("noise", noise), ("frozen", frozen), ("nearly frozen", nearly_frozen)):
        bad = degenerate_frames(frame_statistics(broken), bounds)
        assert bad[1:].mean() > 0.9, name


def test_blockiness_flags_a_world_dissolved_into_token_sized_blocks(real_clips):
    # what a dissolving rollout looks like: each 4x4 patch of a real frame replaced by one flat colour, its mean
    bounds = reference_bounds(real_clips[:4], patch=4)
    assert "blockiness" in bounds and "blockiness" not in reference_bounds(real_clips[:4])
    for clip in real_clips[4:]:
        assert degenerate_frames(frame_statistics(clip, patch=4), bounds).mean() < 0.05
    clip = real_clips[4]
    quilt = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(clip, 4), scale_factor=4, mode="nearest")
    stats = frame_statistics(quilt, patch=4)
    assert degenerate_frames(stats, bounds).mean() > 0.9
    assert (stats["blockiness"] > bounds["blockiness"][1]).mean() > 0.9  # flagged by blockiness itself


def test_eval_split_follows_the_training_split_and_counts_training_files(tmp_path):
    sprites.generate(tmp_path, episodes=10, seed=0, progress=False)
    from genie.config import DataConfig
    from genie.data.heldout import training_record

    record = training_record(DataConfig(dir=str(tmp_path), seq_len=8, val_fraction=0.2))
    val, seen_val = select_videos(tmp_path, "val", 8, record, progress=False)
    train, seen_train = select_videos(tmp_path, "train", 8, record, progress=False)
    everything, seen_all = select_videos(tmp_path, "all", 8, record, progress=False)
    assert (len(val), len(train), len(everything)) == (2, 8, 10)
    assert (seen_val, seen_train, seen_all) == (0, 8, 8)
    assert {fingerprint(v.path) for v in val}.isdisjoint(record["train_fingerprints"])
    _, unknown = select_videos(tmp_path, "val", 8, None, progress=False)
    assert unknown == -1


class OracleLAM:
    """A LAM stand-in: every transition is code 0, and its "prediction" is the real next frame."""

    cfg = type("Cfg", (), {"max_frames": 8})

    def encode(self, video):
        b, t = video.shape[:2]
        from genie.models.lam import LAMEncoding

        return LAMEncoding(None, torch.zeros(b, t - 1, dtype=torch.long), None, torch.zeros(b, t - 1, 2))

    def infer_actions(self, video):
        return self.encode(video).ids

    def __call__(self, video):
        return video[:, 1:], None, None


class OracleWorld:
    """A stand-in world whose generated frames are the real next frames of the clip being scored (`offset`
    shifts them by that many frames): evaluate() must then report perfect (or, shifted, imperfect) rollouts."""

    def __init__(self, clips, offset: int = 0):
        from types import SimpleNamespace

        self.clips, self.offset = clips, offset
        self.meta, self.resolution, self.device, self.num_actions = {}, 32, torch.device("cpu"), 5
        codes = lambda v: torch.zeros(v.shape[0], v.shape[1], 2, 2, dtype=torch.long)  # noqa: E731
        self.tokenizer = SimpleNamespace(
            cfg=SimpleNamespace(max_frames=8),
            num_codes=4,
            encode=codes,
            decode=lambda ids: torch.zeros(ids.shape[0], ids.shape[1], 3, 32, 32),
        )
        self.lam = OracleLAM()

    def reset(self, first, seed=None):
        # which clips these first frames open
        firsts = torch.stack([self.clips[i]["video"][0] for i in range(len(self.clips))])
        self.rows = [int((firsts == torch.from_numpy(f[0])).flatten(1).all(1).nonzero()[0]) for f in first]
        self.t = 0

    def step_float(self, action):
        self.t += 1
        t = min(self.t + self.offset, self.clips.seq_len - 1)
        return torch.stack([self.clips[r]["video"][t] for r in self.rows]).permute(0, 3, 1, 2).float() / 255


def test_eval_compares_generated_frame_k_with_real_frame_k(tmp_path, monkeypatch):
    import genie.evaluate as ev
    from genie.data.clips import VideoClips, usable_videos

    sprites.generate(tmp_path, episodes=4, seed=3, progress=False)
    clips = VideoClips(usable_videos(tmp_path, 17, progress=False), 17, 32, max_clips=8)
    monkeypatch.setattr(ev, "action_scores", lambda *a, **k: {})  # the IDM has its own tests (test_actions.py)
    for offset, perfect in ((0, True), (1, False)):
        world = OracleWorld(clips, offset)
        metrics = ev.evaluate(world, tmp_path, split="all", max_clips=8, control_frames=0, progress=False)
        # the no-model baseline does not depend on the model: the clips' first frame against their frame k
        firsts = torch.stack([clips[i]["video"][0] for i in range(len(clips))]).permute(0, 3, 1, 2).float() / 255
        eighths = torch.stack([clips[i]["video"][8] for i in range(len(clips))]).permute(0, 3, 1, 2).float() / 255
        assert metrics["copy_psnr@8"] == pytest.approx(ev.psnr(firsts, eighths).mean().item(), abs=1e-4)
        assert metrics["copy_psnr@8"] < 40 and metrics["copy_psnr@8_ci95"][0] <= metrics["copy_psnr@8"]
        gain = metrics["rollout_gain_psnr@8"]
        assert gain == pytest.approx(metrics["rollout_psnr@8"] - metrics["copy_psnr@8"], abs=1e-3)
        assert (gain > 20) if perfect else (gain < 20)  # the oracle beats standing still by far, one frame late not
        if perfect:
            assert metrics["rollout_psnr@1"] == pytest.approx(100) and metrics["rollout_psnr@16"] == pytest.approx(100)
            assert metrics["player_pos_error@8"] == 0 and metrics["player_present@8"] == 1
        else:
            assert metrics["rollout_psnr@1"] < 40 and metrics["player_pos_error@8"] > 0
