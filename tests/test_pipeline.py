"""`genie train all` on the sprite world end to end, and what users do with the bundle it writes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from genie.cli import main
from genie.data.video import read_video
from genie.models.pixels import float_to_video
from genie.models.world import WorldModel

ROOT = Path(__file__).resolve().parents[1]
# Held-out bars (docs/results.md, issue 13), under the spread of this very run (tests/conftest.py's overrides)
# trained at seeds 0-3 (one thread each, 2-core Intel Xeon) and scored on the 16 held-out episodes below:
# player within 1.74-1.82 px of its true place at frame 1 and present in 91-100 % of clips; in one piece at frame 8
# in 81-91 % of clips (but 6.0-6.3 px off: the 2 px target is missed); delta_t_psnr 0.20-0.52 dB, its interval's
# low end 0.00-0.16 (so "above 0" is not asserted: one seed touched 0); memory flat in all four, collapse flagged
# in two. The bars sit under the lowest draw with a margin for another CPU's arithmetic.
PLAYER_PRESENT_BAR_1 = 0.75
PLAYER_ERROR_BAR_1 = 3.0  # px
PLAYER_PRESENT_BAR_8 = 0.6
DELTA_T_BAR = 0.05  # dB

# every test here uses the pipeline run trained by tests/conftest.py (`bundle`, `train_all_args`)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def heldout_data(tmp_path_factory) -> Path:
    """Sprite episodes of another generator seed: backgrounds, starts and actions the model never saw."""
    from genie.data import sprites

    out = tmp_path_factory.mktemp("sprites_heldout")
    sprites.generate(out, episodes=16, seed=1, progress=False)
    return out


@pytest.fixture(scope="session")
def metrics(bundle, heldout_data, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("eval") / "metrics.json"
    assert (
        main(
            [
                "eval",
                "--model",
                str(bundle),
                "--data",
                str(heldout_data),
                "--split",
                "all",
                "--out",
                str(out),
                "--max-clips",
                "64",
                "--persistence",
                "1000",
            ]
        )
        == 0
    )
    return json.loads(out.read_text())


def test_bundle_loads_weights_only_and_holds_three_models(bundle):
    raw = torch.load(bundle, map_location="cpu", weights_only=True)
    assert raw["format"] == "genie-bundle"
    assert {"tokenizer", "lam", "dynamics"} <= set(raw)


def test_eval_scores_held_out_episodes_with_intervals(metrics):
    assert metrics["training_videos_scored"] == 0 and metrics["num_videos"] == 16
    low, high = metrics["delta_t_psnr_ci95"]
    assert low < metrics["delta_t_psnr"] < high


def test_first_generated_frame_puts_the_player_where_the_actions_took_it(metrics):
    # the player's centroid in generated frame 1 against the real frame 1, on episodes never trained on
    assert metrics["player_present@1"] > PLAYER_PRESENT_BAR_1
    assert metrics["player_pos_error@1"] < PLAYER_ERROR_BAR_1
    # and it is still there, in one piece, 8 generated frames on (greedy sampling with the previous frame's tokens)
    assert metrics["player_present@8"] > PLAYER_PRESENT_BAR_8


def test_the_inferred_actions_beat_random_ones(metrics):
    assert metrics["delta_t_psnr"] > DELTA_T_BAR


def test_a_long_random_rollout_keeps_flat_memory(metrics):
    persistence = metrics["persistence"]
    assert persistence["steps"] == 1000
    assert persistence["memory_flat"], (persistence["memory_growth_mb"], persistence["memory_slope_kb_per_step"])
    assert persistence["latency_ms_p99"] >= persistence["latency_ms_p50"] > 0
    assert all(Path(f).is_file() for f in persistence["files"])


def test_eval_reports_every_metric_the_data_allows(metrics):
    for key in (
        "recon_psnr",
        "recon_ssim",
        "codebook_usage",
        "codebook_perplexity",
        "lam_psnr",
        "lam_codebook_usage",
        "delta_t_psnr",
        "rollout_psnr@1",
        "rollout_psnr@4",
        "rollout_psnr@8",
        "rollout_psnr@16",
        "player_pos_error@8",
        "action_nmi",
        "action_probe_acc",
        "idm_ceiling_acc",
    ):
        assert key in metrics and np.isfinite(metrics[key]), key
        if key.startswith(("recon", "lam_psnr", "delta", "rollout", "player_pos")):
            low, high = metrics[f"{key}_ci95"]
            if low is None:
                # no interval from fewer than two videos: only player_pos_error@k, which counts just the clips
                # whose player is still there at frame k, can have that few
                assert key.startswith("player_pos") and metrics[key.replace("pos_error", "present")] < 0.1, key
                continue
            assert low <= metrics[key] <= high, key
    assert metrics["recon_psnr"] > 20


def test_actions_that_change_nothing_show_no_evidence_of_control(bundle, heldout_data):
    from genie.evaluate import evaluate

    world = WorldModel.load(bundle)
    embed = world.dynamics.action_embed.weight.data
    embed[:] = embed.mean(0)  # every latent action now means the same: the actions cannot matter
    metrics = evaluate(world, heldout_data, split="all", max_clips=16, progress=False)
    low, high = metrics["delta_t_psnr_ci95"]
    assert low <= 0 <= high
    from genie.evaluate import summary

    # every held code moves the same way: the named keys cannot all follow the game
    assert metrics["control_fidelity"] < 0.5
    assert "actions control the world" not in summary(metrics)


def test_a_broken_dynamics_model_is_flagged_as_collapsed(bundle, heldout_data):
    from genie.data.clips import VideoClips, usable_videos
    from genie.models.pixels import video_to_float
    from genie.persistence import persistence, reference_bounds

    world = WorldModel.load(bundle)
    clips = VideoClips(usable_videos(heldout_data, 32, progress=False), 32, world.resolution, max_clips=8)
    bounds = reference_bounds([video_to_float(clips[i]["video"][None])[0] for i in range(len(clips))])
    torch.manual_seed(0)
    for module in world.dynamics.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()  # untrained weights: the tokens it samples are noise
    summary, _, _ = persistence(world, clips[0]["video"][:1].numpy(), bounds, steps=64, progress=False)
    assert summary["collapsed"] and summary["degenerate_fraction"] > 0.5


def test_bundle_records_its_training_files_for_held_out_evaluation(bundle, pipeline_data, heldout_data):
    from genie.data.heldout import select_videos

    record = WorldModel.load(bundle).meta["training"]
    val, seen_val = select_videos(pipeline_data, "val", 17, record, progress=False)
    train, seen_train = select_videos(pipeline_data, "train", 17, record, progress=False)
    assert len(record["train_files"]) == len(train) == seen_train == 58  # val_fraction 0.1 of 64
    assert len(val) == 6 and seen_val == 0
    other, seen_other = select_videos(heldout_data, "val", 17, record, progress=False)
    assert len(other) == 16 and seen_other == 0  # a folder the model never saw is all held out


def test_train_all_again_skips_finished_stages(bundle, train_all_args, capsys):
    run_dir = bundle.parent
    before = {p: p.stat().st_mtime_ns for p in run_dir.glob("*/checkpoints/last.ckpt")}
    assert len(before) == 3
    assert main(train_all_args) == 0
    assert {p: p.stat().st_mtime_ns for p in run_dir.glob("*/checkpoints/last.ckpt")} == before


def test_training_the_dynamics_stage_alone_writes_a_playable_bundle(bundle, pipeline_data, tmp_path, capsys):
    # retraining only the dynamics model on a finished tokenizer and LAM (as docs/coinrun.md does) ends playable
    run_dir = bundle.parent
    where = ["--data", str(pipeline_data), "--run-dir", str(tmp_path / "dynamics")]
    frozen = ["--tokenizer", str(run_dir / "tokenizer"), "--lam", str(run_dir / "lam")]
    short = ["train.max_steps=2", "train.val_every_steps=2", "data.num_workers=0", "data.max_val_clips=4"]
    config = ROOT / "configs" / "sprites" / "dynamics.yaml"
    assert main(["train", "dynamics", "--config", str(config), *where, *frozen, *short]) == 0
    written = tmp_path / "dynamics" / "world_model.pt"
    assert f"world model bundle: {written}" in capsys.readouterr().out
    world = WorldModel.load(written)
    world.reset(world.prompt[:1], seed=0)
    assert world.step([1]).shape == (1, world.resolution, world.resolution, 3)


def test_world_steps_are_deterministic_under_a_seed(bundle):
    world = WorldModel.load(bundle)
    prompt = world.prompt[:1]

    def play(seed):
        world.reset(prompt, seed=seed)
        return np.stack([world.step([a]) for a in (1, 1, 4, 4)])

    first, again = play(0), play(0)
    assert first.shape == (4, 1, world.resolution, world.resolution, 3)
    np.testing.assert_array_equal(first, again)


def test_played_frames_are_the_decoded_context(bundle):
    # play decodes each new frame with the decoder's cache; it must match decoding the dynamics context
    world = WorldModel.load(bundle)
    assert world.tokenizer.cfg.max_frames == world.dynamics.cfg.max_frames == 8  # the same window and slide
    world.reset(np.stack([world.prompt[:2]] * 2), seed=0)
    lengths = []
    for a in [0, 1, 2, 3, 4, 5, 6, 7] * 2:
        frame = world.step([a, 7 - a])
        context = world.grid_ids(world.state.ids)
        lengths.append(context.shape[1])
        expected = float_to_video(world.tokenizer.decode(context)[:, -1:])[:, 0].numpy()
        assert np.abs(frame.astype(int) - expected.astype(int)).max() <= 1  # rounding to uint8 only
    assert max(lengths) == 8 and min(lengths) < 8  # the window slid


def test_batched_steps_match_the_batch_size(bundle):
    world = WorldModel.load(bundle)
    frames = world.reset(np.stack([world.prompt[:1]] * 3), seed=0)
    assert frames.shape == (3, world.resolution, world.resolution, 3)
    assert world.step([0, 1, 2]).shape == (3, world.resolution, world.resolution, 3)


@pytest.mark.parametrize("how", [["--actions", "0,3,3,1"], ["--random", "5"], ["--repeat", "2:4"], ["--compare"]])
def test_rollout_writes_a_readable_video(bundle, sprite_data, tmp_path, how):
    out = tmp_path / "rollout.mp4"
    prompt = sorted(sprite_data.glob("*.mp4"))[0]
    assert main(["rollout", "--model", str(bundle), "--prompt", str(prompt), *how, "--out", str(out)]) == 0
    frames = read_video(out)
    expected = {"--actions": 5, "--random": 6, "--repeat": 5}.get(how[0])
    if expected:
        assert len(frames) == expected
    else:  # --compare: real | generated side by side for the whole video
        assert frames.shape[2] == 2 * frames.shape[1]


def test_rollout_refuses_invalid_action_ids(bundle, sprite_data, tmp_path, capsys):
    prompt = sorted(sprite_data.glob("*.mp4"))[0]
    code = main(
        [
            "rollout",
            "--model",
            str(bundle),
            "--prompt",
            str(prompt),
            "--actions",
            "0,99",
            "--out",
            str(tmp_path / "x.gif"),
        ]
    )
    assert code == 2
    assert "latent action ids must be in 0..7" in capsys.readouterr().err
    assert not (tmp_path / "x.gif").exists()


def test_rollout_refuses_a_slide_outside_the_context_window(bundle, sprite_data, tmp_path, capsys):
    prompt = sorted(sprite_data.glob("*.mp4"))[0]
    code = main(
        [
            "rollout",
            "--model",
            str(bundle),
            "--prompt",
            str(prompt),
            "--random",
            "3",
            "--slide",
            "8",
            "--out",
            str(tmp_path / "x.gif"),
        ]
    )
    assert code == 2
    assert "slide must be in 1..7" in capsys.readouterr().err
    assert not (tmp_path / "x.gif").exists()


def test_dynamics_trained_from_the_token_cache_with_the_clip_length_as_window(bundle):
    meta = json.loads((bundle.parent / "dynamics" / "token_cache" / "meta.json").read_text())
    assert meta["num_clips"] > 50 and meta["seq_len"] == 8
    world = WorldModel.load(bundle)
    # time positions beyond the 8-frame training clips would be untrained; play slides half the window
    assert world.dynamics.cfg.max_frames == 8 and world.slide == 4


def test_quickstart_notebook_runs_top_to_bottom(bundle, sprite_data, tmp_path):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    os.environ["GENIE_BUNDLE"] = str(bundle)
    os.environ["GENIE_CLIP"] = str(sorted(sprite_data.glob("*.mp4"))[0])
    try:
        NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
        ).execute()
    finally:
        os.environ.pop("GENIE_BUNDLE")
        os.environ.pop("GENIE_CLIP")
    assert (tmp_path / "quickstart_outputs" / "replay.gif").is_file()
    assert (tmp_path / "quickstart_outputs" / "actions.png").is_file()
