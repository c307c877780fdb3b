"""The control measure (genie/control.py): the sprite game stepped with the keys' true actions passes it; worlds
that stand still, ignore the key or mix the keys up fail it, and so does ΔtPSNR's blind spot, a frozen rollout."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from genie.control import (
    HeldRollouts,
    RealTransitions,
    choose_prompts,
    control_scores,
    fidelity,
    hold_codes,
    reference_displacement,
    scene_shift,
    transition_motion,
)
from genie.data.sprites import ACTION_NAMES, SpriteGame, SpriteWorldConfig, sample_episode
from genie.models.actionmap import ActionMap

CFG = SpriteWorldConfig()
BOUNDS = ((2.5, 2.5), (28.5, 28.5))  # the 6-pixel player's centroid range in the 32-pixel world
FRAMES = 8


def _float(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(frames)).movedim(-1, -3).float() / 255


@pytest.fixture(scope="module")
def real() -> RealTransitions:
    """Real transitions of 12 episodes, coded by an oracle LAM (code = true action)."""
    parts = []
    rng = np.random.default_rng(5)
    for i in range(12):
        frames, actions = sample_episode(rng, CFG)
        motion = transition_motion(_float(frames)[None], "player")[0].numpy()
        parts.append((actions, actions, motion, np.full(len(actions), i)))
    return RealTransitions(*(np.concatenate(c) for c in zip(*parts)))


class GameWorld:
    """The sprite game behind the environment API: each prompt is a saved game state, stepped with
    `action_of(code, rng)`; the world the measure must pass when that is the true action."""

    num_actions = len(ACTION_NAMES)

    def __init__(self, games: list[SpriteGame], action_of):
        self.saved = {game.render().tobytes(): game for game in games}
        self.action_of = action_of
        self.rng = np.random.default_rng(0)

    def reset(self, prompt, seed=None):
        self.games = [copy.deepcopy(self.saved[np.asarray(p[-1]).tobytes()]) for p in prompt]
        self.first = np.stack([np.asarray(p[-1]) for p in prompt])

    def step_float(self, codes):
        frames = [game.step(self.action_of(int(c), self.rng)) for game, c in zip(self.games, codes)]
        return _float(np.stack(frames))


class CopyWorld(GameWorld):
    """A frozen rollout: every generated frame is the prompt (copy the last frame)."""

    def step_float(self, codes):
        return _float(self.first)


@pytest.fixture(scope="module")
def games() -> list[SpriteGame]:
    out = []
    for seed in range(16):
        rng = np.random.default_rng(100 + seed)
        game = SpriteGame(rng, CFG)
        for _ in range(3):
            game.step(int(rng.choice(game.feasible())))
        out.append(game)
    return out


def _score(world, games, real, action_map=True) -> dict:
    prompts = np.stack([g.render() for g in games])
    held = hold_codes(world, prompts, np.arange(len(games)), FRAMES, "player")
    amap = ActionMap.fit(real.codes, real.labels, len(ACTION_NAMES), list(ACTION_NAMES)) if action_map else None
    return control_scores(real, held, len(ACTION_NAMES), amap, list(ACTION_NAMES), BOUNDS)


def test_scene_shift_recovers_a_known_shift():
    rng = np.random.default_rng(0)
    image = torch.from_numpy(rng.uniform(size=(3, 64, 64))).float()
    image = torch.nn.functional.avg_pool2d(image[None], 3, 1, 1)[0]  # texture with structure at several scales
    moved = torch.roll(image, shifts=(2, -3), dims=(-2, -1))
    # a static backdrop over the top third does not pin the estimate to 0 (CoinRun's background stays put)
    partly = moved.clone()
    partly[:, :20] = image[:, :20]
    shift = scene_shift(torch.stack([image, image, image]), torch.stack([moved, image, partly]))
    assert shift[0].tolist() == pytest.approx([2.0, -3.0], abs=0.25)
    assert shift[1].abs().max() < 0.05
    assert shift[2].tolist() == pytest.approx([2.0, -3.0], abs=0.5)
    flat = torch.full((1, 3, 16, 16), 0.5)
    assert scene_shift(flat, flat).abs().max() == 0


def test_the_breakout_paddle_is_found_between_the_walls_and_the_tracker_follows_the_folder(tmp_path):
    from genie.control import breakout_paddle_position, motion_tracker

    frames = torch.zeros(2, 3, 64, 64)
    frames[:, :, 40:60, :3] = 142 / 255  # the grey side walls reach into the paddle's rows
    frames[:, :, 40:60, 61:] = 142 / 255
    frames[0, 0, 57:59, 20:28], frames[0, 1:, 57:59, 20:28] = 200 / 255, 72 / 255  # the red paddle, columns 20-27
    pos, found = breakout_paddle_position(frames)
    assert found.tolist() == [True, False]  # the second frame has walls and no paddle
    assert pos[0, 1].item() == pytest.approx(23.5) and 56 <= pos[0, 0].item() <= 60 and pos[1].isnan().all()
    moved = frames[:1].roll(5, dims=-1)
    motion = transition_motion(torch.stack([frames[0], moved[0]])[None], "paddle")[0, 0]
    assert motion.tolist() == [0.0, 5.0]
    ball = frames[:1].clone()
    ball[0, 0, 57:59, 45:47], ball[0, 1:, 57:59, 45:47] = 200 / 255, 72 / 255  # the ball, the paddle's red, in its rows
    assert breakout_paddle_position(ball)[0][0, 1].item() == pytest.approx(23.5)  # the widest red run is the paddle
    with pytest.raises(ValueError, match="unknown motion tracker 'ball'"):
        transition_motion(frames[None], "ball")
    for info, tracker in (
        ({"generator": "sprites"}, "player"),
        ({"generator": "atari", "env": "Breakout"}, "paddle"),
        ({"generator": "procgen", "env": "coinrun"}, "scene"),
    ):
        (tmp_path / "dataset.json").write_text(json.dumps(info))
        assert motion_tracker(tmp_path) == tracker
    assert motion_tracker(tmp_path / "missing") == "scene"


def test_fidelity_and_walls():
    ref = np.array([[0.0, 16.0]])
    assert fidelity(np.array([[0.0, 16.0]]), ref)[0] == 1
    assert fidelity(np.array([[0.0, 0.0]]), ref)[0] == 0  # standing still
    assert fidelity(np.array([[0.0, -16.0]]), ref)[0] == 0  # the wrong way
    assert fidelity(np.array([[0.0, 8.0]]), ref)[0] == pytest.approx(0.5)
    assert fidelity(np.array([[np.nan, np.nan]]), ref)[0] == 0  # the player lost
    # from 4 px left of the right wall, holding right moves 4 px, not 16
    start = np.array([[10.0, 24.5]])
    assert reference_displacement(np.array([0.0, 2.0]), 8, start, BOUNDS).tolist() == [[0.0, 4.0]]


def test_the_game_stepped_with_the_true_actions_passes(games, real):
    scores = _score(GameWorld(games, lambda code, rng: code), games, real)
    assert scores["control_fidelity"] == pytest.approx(1.0, abs=1e-6)
    assert scores["control"]["control_fidelity_from"] == "named keys"
    assert scores["code_fidelity"] == pytest.approx(1.0, abs=1e-6)
    assert scores["lr_opposite_rate"] == 1.0 and scores["jump_rise_rate"] == 1.0
    assert scores["code_purity"] == 1.0 and scores["moving_code_purity_min"] == 1.0
    assert scores["control_fidelity_ci95"][0] > 0.99


def test_a_frozen_world_fails(games, real):
    scores = _score(CopyWorld(games, None), games, real)
    assert scores["control_fidelity"] == 0 and scores["code_fidelity"] == 0
    assert scores["lr_opposite_rate"] == 0 and scores["jump_rise_rate"] == 0


def test_shuffled_actions_fail(games, real):
    shuffled = [0, 3, 4, 2, 1]  # up -> left, down -> right, left -> down, right -> up
    scores = _score(GameWorld(games, lambda code, rng: shuffled[code]), games, real)
    assert scores["control_fidelity"] < 0.1
    assert scores["lr_opposite_rate"] == 0


def test_a_world_that_ignores_the_key_fails(games, real):
    scores = _score(GameWorld(games, lambda code, rng: int(rng.integers(len(ACTION_NAMES)))), games, real)
    assert scores["control_fidelity"] < 0.35


def test_codes_that_name_an_axis_are_impure_and_the_keys_lose_direction(games, real):
    """The failure issue 23 found: a LAM whose codes mean 'horizontal' and 'vertical', not a direction."""
    axis = {0: 0, 1: 1, 2: 1, 3: 2, 4: 2}  # noop, vertical, horizontal
    codes = np.array([axis[int(a)] for a in real.labels])
    impure = RealTransitions(codes, real.labels, real.motion, real.video)
    # whatever the world does with code 2, it cannot go both left and right
    world = GameWorld(games, lambda code, rng: {0: 0, 1: 1, 2: 4}.get(code, 0))
    scores = _score(world, games, impure)
    assert scores["moving_code_purity_min"] < 0.6
    assert scores["lr_opposite_rate"] == 0
    assert scores["control_fidelity"] < 0.7


def test_prompts_are_frames_with_the_player(games):
    clips = [np.stack([g.render()] * 12) for g in games[:3]]
    prompts, owners = choose_prompts(clips, FRAMES, 2, "player")
    assert prompts.shape == (2, 32, 32, 3) and len(set(owners.tolist())) == 2


def test_held_rollouts_record_displacement(games):
    world = GameWorld(games[:2], lambda code, rng: code)
    held = hold_codes(world, np.stack([g.render() for g in games[:2]]), np.arange(2), 4, "player")
    assert isinstance(held, HeldRollouts) and held.displacement.shape == (2, 5, 2)
    assert held.per_frame.shape == (2, 5, 4, 2)
    assert np.allclose(held.displacement[:, 0], 0)  # noop stays


def test_the_verdict_needs_held_keys_that_move_not_delta_t_psnr_alone():
    from genie.evaluate import verdict

    frozen = {"delta_t_psnr": 0.65, "delta_t_psnr_ci95": [0.43, 0.86], "control_fidelity": 0.08}
    frozen["control_fidelity_ci95"] = [0.05, 0.11]
    assert verdict(frozen).startswith("actions do NOT control the world")
    moving = dict(frozen, control_fidelity=0.9, control_fidelity_ci95=[0.8, 0.95])
    assert verdict(moving).startswith("actions control the world")
    assert "only partly" in verdict(dict(frozen, control_fidelity=0.4, control_fidelity_ci95=[0.3, 0.5]))
    assert verdict({"delta_t_psnr": 1.0, "delta_t_psnr_ci95": [0.5, 1.5]}).startswith("not judged")
    assert "reaches 0" in verdict(dict(moving, delta_t_psnr_ci95=[-0.1, 1.0]))
