"""The latent action model: it recovers the sprite world's actions without ever seeing them, cannot
cheat by looking at the frame it predicts, and `genie infer-actions` labels videos of any length."""

from __future__ import annotations

import csv
import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from tiny import tiny_lam

from genie.cli import main
from genie.config import ConfigError, load_config
from genie.data.clips import discover_videos
from genie.data.video import read_video, write_video
from genie.inference import infer_actions, to_model_input
from genie.models.checkpoint import RunError
from genie.models.lam import LatentActionModel, load_lam
from genie.training.lam_stage import LAMRunConfig

# The pipeline run's LAM (tests/conftest.py: configs/sprites/lam.yaml at 400 steps on 64 sprite episodes, 6 held
# out, 32 validation clips) measured action_nmi 0.574, action_probe_acc 0.93, 4 of 8 codes, lam_delta_psnr 3.0 dB.
# The same budget on 12 episodes (docs/lam.md), over train.seed 0-3: action_nmi 0.565-0.695, action_probe_acc
# 0.89-0.98, 4-5 of 8 codes used; over 7 earlier runs whose initial weights were not seeded (the same spread of
# draws), action_nmi 0.52-0.70, action_probe_acc 0.83-1.00, 4-6 codes. Random codes score NMI 0.07 on 126
# transitions. The bars sit below every draw: another CPU's rounding gives another draw.
NMI_BAR = 0.45
PROBE_BAR = 0.75
CODES_BAR = 4 / 8  # 5 true actions: at most one pair of them shares a code


@pytest.fixture(scope="module")
def lam_run(pipeline_lam) -> Path:
    """The LAM of the pipeline run that tests/test_pipeline.py checks (tests/conftest.py: `genie train all`'s
    LAM stage, configs/sprites/lam.yaml at 400 steps on 64 episodes, 6 held out); training it takes minutes,
    so every test that uses it is marked slow."""
    return pipeline_lam


@pytest.fixture(scope="module")
def lam_metrics(lam_run) -> dict[str, float]:
    (log,) = lam_run.glob("logs/version_*/metrics.csv")
    rows = [row for row in csv.DictReader(log.open()) if row.get("val/action_nmi")]
    assert all(name.startswith(("train/", "val/")) for name in rows[-1] if name not in ("step", "epoch"))
    return {k.removeprefix("val/"): float(v) for k, v in rows[-1].items() if v}


@pytest.fixture(scope="module")
def lam(lam_run) -> LatentActionModel:
    return load_lam(lam_run)


@pytest.fixture(scope="module")
def episode(sprite_data) -> Path:
    return discover_videos(sprite_data)[0]


@pytest.mark.slow
def test_lam_recovers_sprite_actions(lam_metrics):
    assert lam_metrics["action_nmi"] >= NMI_BAR, lam_metrics
    assert lam_metrics["action_probe_acc"] >= PROBE_BAR, lam_metrics
    assert lam_metrics["codebook_usage"] >= CODES_BAR, lam_metrics
    assert lam_metrics["lam_delta_psnr"] > 1.5, lam_metrics  # the decoder relies on the codes


@pytest.mark.slow
def test_training_writes_sample_videos(lam_run):
    assert list((lam_run / "samples").glob("lam_*.gif"))


@pytest.mark.slow
def test_decoder_never_sees_the_frame_it_predicts(lam):
    torch.manual_seed(0)
    video = torch.rand(2, lam.cfg.max_frames, 3, lam.cfg.resolution, lam.cfg.resolution)
    z_q, ids, _, _ = lam.encode(video)
    past = video[:, :-1]
    t = 3  # predicting frame t+1 from frames <= t and the code of transition t
    future_changed = past.clone()
    future_changed[:, t + 1 :] = torch.rand_like(future_changed[:, t + 1 :])
    with torch.no_grad():
        pred, pred_changed = lam.decode(past, z_q), lam.decode(future_changed, z_q)
        other_code = z_q.clone()
        other_code[:, t] = lam.vq.lookup((ids[:, t] + 1) % lam.cfg.num_actions)
        pred_other_code = lam.decode(past, other_code)
    assert torch.allclose(pred[:, : t + 1], pred_changed[:, : t + 1], atol=1e-5)
    assert not torch.allclose(pred[:, t + 1 :], pred_changed[:, t + 1 :], atol=1e-3)  # the test can see a leak
    assert (pred[:, t] - pred_other_code[:, t]).abs().max() > 1e-3  # frame t+1 does depend on the code


@pytest.mark.slow
def test_action_of_a_transition_ignores_later_frames(lam):
    torch.manual_seed(0)
    video = torch.rand(2, lam.cfg.max_frames, 3, lam.cfg.resolution, lam.cfg.resolution)
    changed = video.clone()
    changed[:, 5:] = torch.rand_like(changed[:, 5:])
    _, _, _, z = lam.encode(video)
    _, _, _, z_changed = lam.encode(changed)
    assert torch.allclose(z[:, :4], z_changed[:, :4], atol=1e-5)  # transitions 0..3 end at frame <= 4


@pytest.mark.slow
def test_infer_actions_labels_every_transition_of_a_long_video(lam, episode):
    frames = read_video(episode)
    long_video = np.concatenate([frames, frames[::-1]])  # 96 frames, many LAM windows
    actions = infer_actions(lam, long_video)
    assert len(actions) == len(long_video) - 1
    assert all(0 <= a < lam.cfg.num_actions for a in actions)
    # the first window is labelled exactly as the model labels it on its own
    first = lam.infer_actions(to_model_input(long_video[: lam.cfg.max_frames], lam.cfg.resolution)[None])
    assert actions[: lam.cfg.max_frames - 1] == first[0].tolist()


@pytest.mark.slow
def test_infer_actions_command_writes_json_and_annotated_video(lam_run, episode, tmp_path):
    out, gif = tmp_path / "actions.json", tmp_path / "annotated.gif"
    assert (
        main(["infer-actions", "--model", str(lam_run), str(episode), "--out", str(out), "--annotate", str(gif)]) == 0
    )
    report = json.loads(out.read_text())
    assert report["num_actions"] == 8 and report["model"] == str(lam_run)
    (entry,) = report["videos"]
    assert entry["path"] == str(episode) and len(entry["actions"]) == entry["num_frames"] - 1 == 47
    annotated = read_video_gif(gif)
    assert len(annotated) == 48 and annotated.shape[1] > 32  # upscaled


def read_video_gif(path: Path) -> np.ndarray:
    from PIL import Image, ImageSequence

    return np.stack([np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(path))])


def test_missing_checkpoint_is_a_one_line_error(episode, tmp_path, capsys):
    assert (
        main(["infer-actions", "--model", str(tmp_path / "nowhere"), str(episode), "--out", str(tmp_path / "a.json")])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert "not found" in err and len(err.splitlines()) == 1


def test_wrong_kind_of_checkpoint_is_a_one_line_error(episode, tmp_path, capsys):
    ckpt = tmp_path / "tokenizer.ckpt"
    torch.save({"hyper_parameters": {"stage": "tokenizer", "config": {}}, "state_dict": {}}, ckpt)
    assert main(["infer-actions", "--model", str(ckpt), str(episode), "--out", str(tmp_path / "a.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "tokenizer checkpoint, expected a lam checkpoint" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_unreadable_video_is_named_in_a_one_line_error(lam_run, tmp_path, capsys):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all")
    assert main(["infer-actions", "--model", str(lam_run), str(bad), "--out", str(tmp_path / "a.json")]) == 2
    err = capsys.readouterr().err.strip()
    assert "broken.mp4" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_unreadable_videos_are_skipped_but_fail_the_command(lam_run, episode, tmp_path, capsys):
    bad, out = tmp_path / "broken.mp4", tmp_path / "a.json"
    bad.write_bytes(b"")
    assert main(["infer-actions", "--model", str(lam_run), str(episode), str(bad), "--out", str(out)]) == 2
    assert "1 of 2 videos" in capsys.readouterr().err
    report = json.loads(out.read_text())
    assert [v["path"] for v in report["videos"]] == [str(episode)]
    assert report["failed"][0]["path"] == str(bad)


@pytest.mark.slow
def test_videos_are_resized_to_the_lam_resolution(lam_run, episode, tmp_path):
    big = tmp_path / "big.mp4"
    write_video(big, read_video(episode, resolution=64)[:10])
    out = tmp_path / "a.json"
    assert main(["infer-actions", "--model", str(lam_run), str(big), "--out", str(out)]) == 0
    assert len(json.loads(out.read_text())["videos"][0]["actions"]) == 9


@pytest.mark.slow
def test_checkpoint_loads_weights_only(lam_run, lam, tmp_path):
    ckpt = torch.load(lam_run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert ckpt["hyper_parameters"]["stage"] == "lam"
    bundle = tmp_path / "world_model.pt"
    torch.save(
        {"format": "genie-bundle", "lam": {"config": dataclasses.asdict(lam.cfg), "state_dict": lam.state_dict()}},
        bundle,
    )
    from_bundle = load_lam(bundle)
    assert not from_bundle.training
    for name, value in lam.state_dict().items():
        assert torch.equal(value, from_bundle.state_dict()[name])


def test_bundle_without_a_lam_is_refused(tmp_path):
    bundle = tmp_path / "world_model.pt"
    torch.save({"format": "genie-bundle"}, bundle)
    with pytest.raises(RunError, match="without a LAM"):
        load_lam(bundle)


def test_run_config_follows_the_data():
    cfg = load_config(LAMRunConfig, None, ["data.resolution=48", "data.seq_len=6", "model.patch=8"])
    assert (cfg.model.resolution, cfg.model.max_frames) == (48, 6)
    with pytest.raises(ConfigError, match="divisible"):
        load_config(LAMRunConfig, None, ["data.resolution=50", "model.patch=8"])


def test_encoder_and_decoder_shapes():
    model = tiny_lam(resolution=16, patch=4, max_frames=5, code_dim=32)
    video = torch.rand(3, 5, 3, 16, 16)
    z_q, ids, vq_loss, z = model.encode(video)
    assert z_q.shape == z.shape == (3, 4, 32) and ids.shape == (3, 4) and vq_loss.ndim == 0
    pred, ids, _ = model(video)
    assert pred.shape == (3, 4, 3, 16, 16) and model.infer_actions(video).dtype == torch.long


def test_diff_plus_frame_encoder_reads_where_a_move_happens():
    """encoder_input "diff+frame": the same frame difference over another frame t+1 gives another latent (the
    "diff" encoder cannot tell them apart), and a transition's latent still ignores later frames."""
    torch.manual_seed(0)
    for encoder_input, differs in (("diff", False), ("diff+frame", True)):
        model = tiny_lam(resolution=16, patch=4, max_frames=4, encoder_input=encoder_input).eval()
        video = torch.rand(2, 4, 3, 16, 16) * 0.5
        offset = video + 0.3  # the same differences, brighter frames
        _, _, _, z = model.encode(video)
        _, _, _, z_offset = model.encode(offset)
        assert (not torch.allclose(z, z_offset, atol=1e-5)) == differs, encoder_input
        changed = video.clone()
        changed[:, 3:] = torch.rand_like(changed[:, 3:])
        assert torch.allclose(model.encode(changed)[3][:, :2], z[:, :2], atol=1e-5)
    with pytest.raises(ValueError, match="encoder_input"):
        tiny_lam(encoder_input="frames")


def test_shift_within_patch_rolls_each_clip_by_its_own_offset():
    from genie.models.lam import shift_within_patch

    video = torch.rand(6, 3, 3, 16, 16)
    shifted = shift_within_patch(video, patch=4)
    for clip, out in zip(video, shifted):
        # some roll of 0..3 pixels on each axis, the same for every frame and channel of the clip
        matches = [
            (dy, dx)
            for dy in range(4)
            for dx in range(4)
            if torch.equal(torch.roll(clip, (dy, dx), dims=(-2, -1)), out)
        ]
        assert len(matches) == 1
