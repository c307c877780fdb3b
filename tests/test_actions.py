"""True actions: the inverse-dynamics ceiling, the latent-to-true action map, and named actions in rollout."""

from __future__ import annotations

import argparse
import shutil

import numpy as np
import pytest
import torch
from test_play import tiny_world

from genie.config import ConfigError, DataConfig
from genie.data.clips import usable_videos
from genie.data.labels import action_meta, strided_labels
from genie.data.sprites import ACTION_NAMES, SpriteWorldConfig, sample_episode
from genie.metrics import linear_probe_accuracy
from genie.models.actionmap import ActionMap
from genie.models.world import ActionError, WorldModel
from genie.rollout import parse_actions
from genie.scoring import action_scores, held_out_split, idm_ceiling_acc

PROCGEN_NAMES = [
    "LEFT+DOWN",
    "LEFT",
    "LEFT+UP",
    "DOWN",
    "NOOP",
    "UP",
    "RIGHT+DOWN",
    "RIGHT",
    "RIGHT+UP",
    "D",
    "A",
    "W",
    "S",
    "Q",
    "E",
]  # procgen's 15 actions, as genie data procgen records them


@pytest.fixture(scope="module")
def sprite_pairs():
    """Transitions of 32 sprite-world episodes: before, after uint8 (N, 32, 32, 3), actions (N,), episode (N,)."""
    rng = np.random.default_rng(0)
    episodes = [sample_episode(rng, SpriteWorldConfig()) for _ in range(32)]
    before = np.concatenate([frames[:-1] for frames, _ in episodes])
    after = np.concatenate([frames[1:] for frames, _ in episodes])
    actions = np.concatenate([a for _, a in episodes])
    episode = np.concatenate([np.full(len(a), i) for i, (_, a) in enumerate(episodes)])
    return before, after, actions, episode


# ------------------------------------------------------------------------------------ the IDM ceiling


def test_idm_names_sprite_actions_on_held_out_episodes(sprite_pairs):
    before, after, actions, episode = sprite_pairs
    # every sprite action moves the player 2 pixels (the policy never walks into a wall): all are visible;
    # measured 0.93-0.985 over seeds 0-3 (200 steps, ~750 training transitions), 0.985 for seed 0
    assert idm_ceiling_acc(before, after, actions, groups=episode, steps=200) >= 0.9


def test_idm_is_at_chance_when_labels_are_shuffled(sprite_pairs):
    before, after, actions, episode = sprite_pairs
    shuffled = np.random.default_rng(1).permutation(actions)
    held_out = ~held_out_split(len(actions), seed=0, groups=episode)
    majority = np.bincount(shuffled[held_out]).max() / held_out.sum()  # 0.25 (noop); measured 0.19-0.21
    assert idm_ceiling_acc(before, after, shuffled, groups=episode, steps=100) <= majority + 0.05


def test_idm_takes_uint8_or_float_frames_and_is_deterministic(sprite_pairs):
    before, after, actions, _ = sprite_pairs
    before, after, actions = before[:200], after[:200], actions[:200]
    first = idm_ceiling_acc(before, after, actions, steps=10, seed=3)
    assert idm_ceiling_acc(before, after, actions, steps=10, seed=3) == first
    as_float = [torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 for x in (before, after)]
    assert idm_ceiling_acc(*as_float, actions, steps=10, seed=3) == first
    with pytest.raises(ValueError, match="uint8"):
        idm_ceiling_acc(before[..., :2], after[..., :2], actions, steps=1)
    unknown = np.full_like(actions, -1)
    assert np.isnan(idm_ceiling_acc(before, after, unknown, steps=1))


def test_split_matches_the_linear_probe_and_keeps_episodes_whole():
    n = 101
    train = held_out_split(n, seed=5)
    # a probe on features that are the labels where we train, noise where we hold out, is right only on
    # the training half: the linear probe held out the same samples
    labels = np.arange(n) % 2
    features = np.where(train, labels, np.random.default_rng(0).normal(size=n))[:, None] * 1.0
    assert train.sum() == n // 2 and linear_probe_accuracy(features, labels, seed=5) < 0.75
    groups = np.repeat(np.arange(10), 7)
    train = held_out_split(len(groups), seed=0, groups=groups)
    assert all(len(set(train[groups == g])) == 1 for g in range(10)) and 0 < train.sum() < len(groups)


# ---------------------------------------------------------------------------------- the action map


def fake_lam_codes(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """What a good LAM with 8 codes might say of procgen actions: LEFT -> 3, RIGHT -> 6 or 1, UP -> 2, NOOP ->
    0 (15% of the time any code)."""
    rng = np.random.default_rng(seed)
    table = {1: 3, 7: 6, 5: 2, 4: 0, 8: 1}  # LEFT, RIGHT, UP, NOOP, RIGHT+UP
    codes = np.array([table[a] for a in labels])
    noise = rng.random(len(labels)) < 0.15
    codes[noise] = rng.integers(0, 8, noise.sum())
    return codes


def test_action_map_names_codes_and_binds_keys():
    labels = np.random.default_rng(0).choice([1, 7, 5, 4, 8], size=200)
    action_map = ActionMap.fit(fake_lam_codes(labels), labels, 8, PROCGEN_NAMES, episodes=2)
    names = action_map.code_names()
    assert (names[3], names[6], names[2], names[0], names[1]) == ("LEFT", "RIGHT", "UP", "NOOP", "RIGHT+UP")
    assert action_map.labels == 200 and action_map.counts.shape == (8, 15)
    assert (
        action_map.code_for("right") == 6 and action_map.code_for("LEFT") == 3 and action_map.code_for("Right+Up") == 1
    )
    assert action_map.code_for("jump") == 2  # procgen's jump is UP
    assert action_map.key_bindings() == {"ArrowLeft": 3, "ArrowRight": 6, "ArrowUp": 2, " ": 2}
    with pytest.raises(ActionError, match="knows left, noop, up, right, right\\+up"):
        action_map.code_for("fire")  # never seen: no code means it
    assert action_map.accuracy(fake_lam_codes(labels, seed=1), labels) > 0.8


def test_best_code_for_an_action_is_the_one_that_most_reliably_means_it():
    # code 0: 50 NOOP, 40 LEFT; code 1: 30 LEFT, 1 NOOP; code 2: 2 LEFT (too few to trust over code 1)
    codes = np.array([0] * 90 + [1] * 31 + [2] * 2)
    labels = np.array([0] * 50 + [1] * 40 + [1] * 30 + [0] + [1] * 2)
    action_map = ActionMap.fit(codes, labels, 4, ["noop", "left"])
    assert action_map.action_to_code() == [0, 1] and action_map.code_to_action() == [0, 1, 1, None]


def test_action_map_round_trips_through_a_bundle(tmp_path):
    labels = np.random.default_rng(0).choice([0, 1, 2, 3], size=100)
    world = tiny_world()
    world.meta.update(ActionMap.fit(labels, labels, 4, ["noop", "left", "right", "up"], episodes=3).to_meta())
    loaded = WorldModel.load(world.save(tmp_path / "w.pt"))
    action_map = ActionMap.from_meta(loaded.meta)
    assert loaded.meta["action_names"] == ["noop", "left", "right", "up"]
    assert action_map.code_names() == ["noop", "left", "right", "up"] and action_map.episodes == 3
    assert ActionMap.from_meta(tiny_world().meta) is None


def test_strided_labels_keep_only_unambiguous_spans():
    truth = np.array([1, 1, 2, 2, 2, 3, 3])  # 8 frames
    assert strided_labels(truth, 8, 1).tolist() == truth.tolist()
    assert strided_labels(truth, 8, 2).tolist() == [1, 2, -1]


def test_action_meta_from_a_few_labelled_training_episodes(sprite_data, tmp_path):
    lam = tiny_world().lam
    videos = usable_videos(sprite_data, min_frames=2, progress=False)
    meta = action_meta(lam, videos, DataConfig(dir=str(sprite_data)), min_labels=60)
    assert meta["action_names"] == list(ACTION_NAMES)
    stored = meta["action_map"]
    assert stored["episodes"] == 2 and stored["labels"] == 2 * 47  # two 48-frame episodes hold 60 labels
    assert np.array(stored["counts"]).shape == (4, 5)
    # no sidecars: nothing to learn, nothing stored
    bare = tmp_path / "bare"
    bare.mkdir()
    shutil.copy(videos[0].path, bare / "episode.mp4")
    assert action_meta(lam, usable_videos(bare, min_frames=2, progress=False), DataConfig(dir=str(bare))) == {}


def test_action_scores_of_a_bundle_on_a_labelled_folder(sprite_data):
    world = tiny_world()
    scores = action_scores(world, sprite_data, max_transitions=240, idm_steps=20)
    assert scores["action_transitions"] == 240 and scores["action_split"] == "episode"
    assert 0 < scores["action_train_transitions"] < 240 and scores["action_episodes"] == 12
    for key in ("idm_ceiling_acc", "action_probe_acc", "action_nmi", "action_map_acc", "action_majority_acc"):
        assert 0 <= scores[key] <= 1, key
    assert "action_bundle_map_acc" not in scores  # the tiny world has no stored map


# ------------------------------------------------------------------------------------ named actions


def rollout_args(**kwargs) -> argparse.Namespace:
    return argparse.Namespace(**{"seed": 0, "random": None, "repeat": None, "actions": None, **kwargs})


def test_rollout_actions_take_ids_and_names():
    labels = np.random.default_rng(0).choice([1, 7, 5, 4, 8], size=200)
    action_map = ActionMap.fit(fake_lam_codes(labels), labels, 8, PROCGEN_NAMES)
    assert parse_actions(rollout_args(actions="right,right,jump, 0"), 8, action_map) == [6, 6, 2, 0]
    assert parse_actions(rollout_args(actions="0,3,3,1"), 8) == [0, 3, 3, 1]
    with pytest.raises(ConfigError, match="no latent action means 'fire'"):
        parse_actions(rollout_args(actions="right,fire"), 8, action_map)
    with pytest.raises(ConfigError, match="no action names"):
        parse_actions(rollout_args(actions="right"), 8)


@pytest.mark.parametrize("given", ["", " ", "0,,1", "0,1,"])
def test_empty_actions_are_an_error_naming_the_form(given):
    with pytest.raises(ConfigError, match="comma-separated latent action ids such as 0,3,3,1") as error:
        parse_actions(rollout_args(actions=given), 8)
    assert "\n" not in str(error.value)
