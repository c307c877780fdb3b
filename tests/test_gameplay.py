"""Procgen and Atari recording: readable folders, exact sidecars, determinism, clear errors."""

import json

import numpy as np
import pytest

from genie.data import gameplay
from genie.data.clips import actions_path
from genie.data.recording import DatasetExistsError
from genie.data.video import read_video

pytest.importorskip("procgen")
pytest.importorskip("ale_py")


def record_procgen(out, **kwargs):
    # short holds in these 24-frame episodes: with the default 6..16 one LEFT held at the level's start wall can
    # fill most of an episode with the same frame; no lead-in, which can end against a wall the player must jump
    defaults = {"episodes": 2, "max_frames": 24, "progress": False, "min_repeat": 2, "max_repeat": 8, "lead_in": 0}
    return gameplay.generate_procgen(out, **{**defaults, **kwargs})


def record_atari(out, **kwargs):
    return gameplay.generate_atari(
        out, **{"episodes": 2, "max_frames": 20, "resolution": 32, "progress": False, **kwargs}
    )


GENERATORS = {"procgen": (record_procgen, 64), "atari": (record_atari, 32)}


def sidecars(paths):
    return [np.load(actions_path(p)) for p in paths]


@pytest.mark.parametrize("source", GENERATORS)
def test_generator_writes_decodable_episodes_with_one_action_per_transition(tmp_path, source):
    record, resolution = GENERATORS[source]
    paths = record(tmp_path / source)
    assert len(paths) == 2
    info = json.loads((tmp_path / source / "dataset.json").read_text())
    assert info["episodes"] == 2 and info["fps"] == 15
    for path in paths:
        frames = read_video(path)
        assert frames.shape[1:] == (resolution, resolution, 3)
        assert gameplay.MIN_EPISODE_FRAMES <= len(frames) <= info["max_frames"]
        actions = np.load(actions_path(path))
        assert actions.dtype == np.int64 and actions.shape == (len(frames) - 1,)
        assert set(actions.tolist()) <= set(range(len(info["action_names"])))
        assert len(np.unique(frames.reshape(len(frames), -1), axis=0)) > len(frames) // 2, "gameplay should move"


def test_procgen_records_raw_ids_from_one_action_per_effect_held_for_min_repeat(tmp_path):
    paths = record_procgen(tmp_path / "coinrun", min_repeat=3, max_repeat=5, max_frames=60)
    info = json.loads((tmp_path / "coinrun" / "dataset.json").read_text())
    assert len(info["action_names"]) == 15 and info["action_names"][4] == "NOOP"
    assert info["policy"]["actions"] == list(gameplay.PROCGEN_DISTINCT_ACTIONS["coinrun"])
    for actions in sidecars(paths):
        assert set(actions.tolist()) <= set(gameplay.PROCGEN_DISTINCT_ACTIONS["coinrun"])
        change = np.flatnonzero(np.diff(actions)) + 1
        runs = np.diff(np.concatenate([[0], change, [len(actions)]]))
        assert runs[:-1].min() >= 3  # the last run may be cut by the episode's end


def test_coinrun_recordings_start_after_an_unrecorded_lead_in_away_from_the_start_wall(tmp_path):
    plain = record_procgen(tmp_path / "plain", episodes=4, lead_in=0)
    led = record_procgen(tmp_path / "led", episodes=4, lead_in=40)
    info = json.loads((tmp_path / "led" / "dataset.json").read_text())
    assert info["policy"]["lead_in"] == {"action": 7, "max_steps": 40}  # 7 = RIGHT
    assert json.loads((tmp_path / "plain" / "dataset.json").read_text())["policy"]["lead_in"] is None
    # same seed, same levels: without the lead-in every recording opens on its level's first frame; with it most
    # open somewhere further right (a draw of 0 steps keeps the first frame)
    moved = [not np.array_equal(read_video(a)[0], read_video(b)[0]) for a, b in zip(plain, led)]
    assert sum(moved) >= 3
    with pytest.raises(gameplay.GameplayError, match="lead_in must be >= 0"):
        record_procgen(tmp_path / "bad", lead_in=-1)


def test_each_breakout_control_moves_the_paddle_its_way(tmp_path):
    # the paddle tracker (genie.control.breakout_paddle_position) on recorded frames; 3 episodes each of seeds 2-5
    # gave RIGHT +3.4..+4.5 px a frame (61-67 % of its transitions rightwards), LEFT -3.4..-4.2 (56-68 % leftwards),
    # NOOP and FIRE within 0.15 px
    from genie.control import motion_by_action, motion_tracker

    record_atari(tmp_path / "breakout", episodes=3, seed=2, resolution=64, max_frames=500)
    assert motion_tracker(tmp_path / "breakout") == "paddle"
    table = motion_by_action(tmp_path / "breakout", resolution=64)
    assert table["RIGHT"]["mean_motion"][1] > 2.0 and table["RIGHT"]["right"] > 0.45
    assert table["LEFT"]["mean_motion"][1] < -2.0 and table["LEFT"]["left"] > 0.45
    for still in ("NOOP", "FIRE"):
        assert abs(table[still]["mean_motion"][1]) < 0.5
    assert all(row["mean_motion"][0] == 0 for row in table.values())  # the paddle only moves sideways


class _CountingGame:
    """A stand-in for a vectorised procgen game of one environment: levels of `length` steps, each frame holding
    (level, step) in its first two pixels; `acted` keeps every action it was given."""

    def __init__(self, length: int = 40):
        self.length, self.level, self.step, self.first, self.acted = length, 0, 0, True, []

    def observe(self):
        frame = np.zeros((1, 64, 64, 3), dtype=np.uint8)
        frame[0, 0, 0, :2] = self.level, self.step
        return None, {"rgb": frame}, np.array([self.first])

    def act(self, actions):
        self.acted.append(int(actions[0]))
        self.step, self.first = self.step + 1, False
        if self.step == self.length:
            self.level, self.step, self.first = self.level + 1, 0, True


def test_the_lead_in_is_played_unrecorded_and_the_recording_starts_where_it_ends():
    game = _CountingGame()
    policy = gameplay.StickyRandomPolicy([1], [1.0], 1, 1, np.random.default_rng(0))  # the policy only plays 1
    episodes = gameplay._procgen_episodes(game, policy, 500, lead_in=(7, 12), rng=np.random.default_rng(3))
    starts = []
    for _ in range(6):
        frames, actions = next(episodes)
        level, first_step = frames[0, 0, 0, :2]
        assert (frames[:, 0, 0, 0] == level).all() and np.array_equal(
            frames[:, 0, 0, 1], first_step + np.arange(len(frames))
        )
        assert len(actions) == len(frames) - 1 and set(actions.tolist()) == {1}  # no lead-in step is recorded
        starts.append(int(first_step))
    assert 0 <= min(starts) and max(starts) <= 12 and len(set(starts)) > 1  # a fresh draw of 0..12 steps a level
    assert game.acted.count(7) >= sum(starts)  # the lead-in steps were played


def test_atari_episode_starts_with_fire(tmp_path):
    paths = record_atari(tmp_path / "breakout")
    info = json.loads((tmp_path / "breakout" / "dataset.json").read_text())
    assert info["action_names"] == ["NOOP", "FIRE", "RIGHT", "LEFT"]
    assert all(actions[0] == 1 for actions in sidecars(paths))


@pytest.mark.parametrize("source", GENERATORS)
def test_same_seed_gives_identical_sidecars_and_another_seed_differs(tmp_path, source):
    record, _ = GENERATORS[source]
    first = sidecars(record(tmp_path / "a", seed=3))
    again = sidecars(record(tmp_path / "b", seed=3))
    other = sidecars(record(tmp_path / "c", seed=4))
    assert all(np.array_equal(x, y) for x, y in zip(first, again, strict=True))
    assert not all(len(x) == len(y) and np.array_equal(x, y) for x, y in zip(first, other))


@pytest.mark.parametrize("source", GENERATORS)
def test_generator_refuses_to_overwrite_an_existing_dataset(tmp_path, source):
    record, _ = GENERATORS[source]
    record(tmp_path / "d")
    with pytest.raises(DatasetExistsError, match="--overwrite"):
        record(tmp_path / "d")
    assert len(record(tmp_path / "d", overwrite=True, episodes=1)) == 1
    assert sorted(p.name for p in (tmp_path / "d").glob("*.mp4")) == ["episode_00000.mp4"]


def test_unknown_games_and_modes_name_the_valid_ones(tmp_path):
    with pytest.raises(gameplay.GameplayError, match="unknown Procgen game 'coinrunn'.*coinrun, dodgeball"):
        gameplay.generate_procgen(tmp_path / "x", env="coinrunn")
    with pytest.raises(gameplay.GameplayError, match="unknown Atari game 'Breakot'.*Breakout"):
        gameplay.generate_atari(tmp_path / "y", env="Breakot")
    with pytest.raises(gameplay.GameplayError, match="no 'memory' mode for coinrun.*maze"):
        gameplay.generate_procgen(tmp_path / "x", distribution_mode="memory")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def _match_rates(env: str, states: int = 16, steps: int = 12) -> np.ndarray:
    """(15, 15): how often two raw procgen actions, each held for `steps` steps from the same saved
    mid-episode state, give identical frames."""
    from procgen import ProcgenGym3Env

    game = ProcgenGym3Env(num=1, env_name=env, rand_seed=1, distribution_mode="easy")
    rng = np.random.default_rng(0)
    rollouts = np.empty((states, 15), dtype=object)
    for k in range(states):
        for _ in range(int(rng.integers(5, 40))):
            game.act(rng.integers(0, 9, size=1))
        state = game.get_state()
        for action in range(15):
            game.set_state(state)
            frames = []
            for _ in range(steps):
                game.act(np.array([action]))
                frames.append(game.observe()[1]["rgb"][0])
            rollouts[k, action] = np.stack(frames).tobytes()
    return np.array([[np.mean(rollouts[:, a] == rollouts[:, b]) for b in range(15)] for a in range(15)])


@pytest.mark.parametrize("env", ["coinrun", "ninja", "starpilot", "maze", "fruitbot"])
def test_procgen_policy_samples_one_action_per_distinct_effect(env):
    table = list(gameplay.PROCGEN_DISTINCT_ACTIONS[env])
    rates = _match_rates(env)
    for i, a in enumerate(table):
        for b in table[i + 1 :]:
            assert rates[a, b] < 1, f"{env}: actions {a} and {b} always act alike"
    for a in set(range(15)) - set(table):
        assert rates[a, table].max() >= 0.8, f"{env}: action {a} acts unlike every sampled action"
