"""Recording real gameplay as dataset folders: Procgen (procgen2) and Atari (ale-py) under a random policy.

Each episode becomes `episode_XXXXX.mp4` (lossless) with `episode_XXXXX.actions.npy`: the raw action id
taken between frame t and t+1 (length frames - 1), written by `genie.data.recording.EpisodeWriter`; the
folder's `dataset.json` names the actions and the policy. The policy samples an action and holds it
for a random number of steps (sticky actions), so that an action's effect lasts long enough to be
seen and learned. Deterministic given a seed.

Procgen's 15 raw actions alias heavily (in coinrun LEFT+DOWN nearly always acts as LEFT, and the six
letter keys do nothing), so the policy samples from one action per distinct effect, a table measured
from the games themselves (see `PROCGEN_DISTINCT_ACTIONS`): the recorded ids are not two names for
one effect. Every distinct action is equally likely, left as often as right, and each is held for
6..16 steps (0.4-1.1 s at 15 fps): CoinRun's player has momentum, and with holds of 2..8 steps and
right-moving actions twice as likely (this recorder's earlier policy) the player kept drifting right
through its LEFT transitions. Measured by scripts/data_controls.py on 24 episodes of seed 1 (docs/data.md):
LEFT transitions scroll the scene the right way (content moving right) in 36 % of transitions and the
wrong way in 6 % (29 % / 13 % before), RIGHT 51 % / 5 %, the UP actions move it down (the camera rising
with the jump) in about half. CoinRun levels start against their left wall, where LEFT does nothing, so a
CoinRun recording starts after an unrecorded lead-in of RIGHT (`PROCGEN_LEAD_IN`): at stride 2 LEFT then
moves the scene the right way in 54 % of transitions instead of 42 % (docs/data.md).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from genie.config import ConfigError
from genie.data.recording import EpisodeWriter

MIN_EPISODE_FRAMES = 16  # shorter episodes cannot fill one default clip; they are skipped
PROCGEN_FPS = 15  # procgen's own video frame rate
PROCGEN_NUM_ENVS = 4  # environments stepped together
ATARI_FPS_BASE = 60  # the Atari 2600 runs at 60 frames per second
ATARI_REPEAT = (1, 4)  # an Atari action is held for 1..4 agent steps (each already frame_skip frames)
ATARI_STICKY_PROBABILITY = 0.25  # ALE v5: on each frame the emulator repeats the previous action with this probability

# One raw action id per group of ids with the same effect, the one with the fewest keys. Measured on
# procgen2 0.10.7: from 40 saved mid-episode states per game, each of the 15 actions held for 12 steps;
# ids whose frames matched in every state form a group (tests/test_gameplay.py repeats the measurement).
# One exception: coinrun's DOWN only matters on crates (it drops through them), so LEFT+DOWN, DOWN and
# RIGHT+DOWN match LEFT, NOOP and RIGHT in 88-97% of states and are left out.
PROCGEN_DISTINCT_ACTIONS: dict[str, tuple[int, ...]] = {
    "bigfish": (0, 1, 2, 3, 4, 5, 6, 7, 8),
    "bossfight": (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    "caveflyer": (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    "chaser": (0, 1, 2, 3, 4, 5, 6, 7, 8),
    "climber": (1, 2, 4, 5, 7, 8),
    "coinrun": (1, 2, 4, 5, 7, 8),
    "dodgeball": (0, 1, 2, 3, 4, 5, 6, 7, 8, 9),
    "fruitbot": (1, 4, 7, 9),
    "heist": (0, 1, 2, 3, 4, 5, 6, 7, 8),
    "jumper": (1, 2, 4, 5, 7, 8),
    "leaper": (1, 3, 4, 5, 7),
    "maze": (1, 3, 4, 5, 7),
    "miner": (1, 3, 4, 5, 7),
    "ninja": (1, 2, 4, 5, 7, 8, 9, 10, 11, 12),
    "plunder": (1, 4, 7, 9),
    "starpilot": (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10),
}
# Games whose levels start against a wall the player must leave: (the action held before recording, the most
# steps). CoinRun's levels start at the left wall and a random policy with left as likely as right stays near
# it, so a LEFT transition mostly shows the player pressed against the wall: at stride 2 on 32 held-out
# episodes, LEFT moved the scene the right way 0.88 px a step against RIGHT's 1.36 (scripts/data_controls.py).
PROCGEN_LEAD_IN: dict[str, tuple[int, int]] = {"coinrun": (7, 96)}  # 7 = RIGHT; 96 steps: 6.4 s at 15 fps
# The games each distribution mode exists for: procgen aborts the whole process on other combinations
PROCGEN_MODE_GAMES: dict[str, tuple[str, ...]] = {
    "easy": tuple(PROCGEN_DISTINCT_ACTIONS),
    "hard": tuple(PROCGEN_DISTINCT_ACTIONS),
    "extreme": ("chaser", "dodgeball", "leaper", "starpilot"),
    "memory": ("caveflyer", "dodgeball", "heist", "jumper", "maze", "miner"),
    "exploration": ("caveflyer", "climber", "coinrun", "heist", "jumper", "leaper", "maze", "ninja"),
}


class GameplayError(ConfigError):
    """An unknown game, a bad option or a missing optional dependency; the CLI prints it in one line."""


class StickyRandomPolicy:
    """Random actions with repeat, for `num` environments at once: each environment samples an action
    from `actions` with probabilities `weights` and holds it for min_repeat..max_repeat steps."""

    def __init__(self, actions, weights, min_repeat: int, max_repeat: int, rng: np.random.Generator, num: int = 1):
        if not 1 <= min_repeat <= max_repeat:
            raise GameplayError(f"action repeat needs 1 <= min_repeat <= max_repeat, got {min_repeat}..{max_repeat}")
        self.actions = np.asarray(actions, dtype=np.int64)
        self.weights = np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self.min_repeat, self.max_repeat = min_repeat, max_repeat
        self.rng = rng
        self.current = np.zeros(num, dtype=np.int64)
        self.hold = np.zeros(num, dtype=np.int64)  # steps left on the current action; 0 = sample anew

    def reset(self, index: int) -> None:
        """Environment `index` started a new episode: its next action is sampled afresh."""
        self.hold[index] = 0

    def __call__(self) -> np.ndarray:
        """The next action of every environment, int64 (num,)."""
        expired = self.hold == 0
        count = int(expired.sum())
        if count:
            self.current[expired] = self.rng.choice(self.actions, size=count, p=self.weights)
            self.hold[expired] = self.rng.integers(self.min_repeat, self.max_repeat + 1, size=count)
        self.hold -= 1
        return self.current.copy()


def _check_common(episodes: int, max_frames: int) -> None:
    if episodes < 0:
        raise GameplayError(f"episodes must be >= 0, got {episodes}")
    if max_frames < MIN_EPISODE_FRAMES:
        raise GameplayError(
            f"max_frames must be >= {MIN_EPISODE_FRAMES} (shorter episodes are skipped), got {max_frames}"
        )


# ---------------------------------------------------------------------------------------------- Procgen


def _import_procgen():
    try:
        # procgen imports the retired `gym` package, which prints a four-line deprecation notice
        with contextlib.redirect_stderr(io.StringIO()):
            from procgen import ProcgenGym3Env
    except ImportError as e:
        raise GameplayError(f"Procgen is not installed ({e}); install with pip install 'genie[procgen]'") from None
    return ProcgenGym3Env


def procgen_policy_weights(env: str) -> tuple[tuple[int, ...], np.ndarray]:
    """The raw action ids the random policy samples in `env`, and their probabilities."""
    actions = PROCGEN_DISTINCT_ACTIONS[env]
    return actions, np.full(len(actions), 1.0 / len(actions))  # every control its share (module docstring)


def _procgen_episodes(
    game,
    policy: StickyRandomPolicy,
    max_frames: int,
    lead_in: tuple[int, int] | None = None,
    rng: np.random.Generator | None = None,
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Finished episodes of the vectorised `game`, as (frames (T, 64, 64, 3), actions (T-1,)), forever.

    An episode ends when procgen starts a new one (`first`); its terminal frame is never observed, so
    the action that ended it is dropped. An episode cut at `max_frames` is kept and the rest of that
    level is discarded, so that every video starts at the start of a level. With `lead_in` = (action,
    steps), each level first plays `action` for a random 0..steps steps unrecorded (`rng` draws them), so
    that the recording starts away from the level's left wall (coinrun: `PROCGEN_LEAD_IN`).
    """
    _, obs, _ = game.observe()
    num = len(obs["rgb"])
    rng = rng if rng is not None else np.random.default_rng(0)

    def lead_steps() -> int:
        return int(rng.integers(0, lead_in[1] + 1)) if lead_in else 0

    leading = np.array([lead_steps() for _ in range(num)], dtype=np.int64)  # unrecorded steps left
    frames = [[frame] for frame in obs["rgb"]]
    actions: list[list[int]] = [[] for _ in range(num)]
    recording = leading == 0
    while True:
        step_actions = policy()
        if lead_in:
            step_actions = np.where(leading > 0, lead_in[0], step_actions)
        game.act(step_actions)
        _, obs, first = game.observe()
        for i in range(num):
            if first[i]:
                if recording[i] and len(frames[i]) >= MIN_EPISODE_FRAMES:
                    yield np.stack(frames[i]), np.asarray(actions[i], dtype=np.int64)
                leading[i] = lead_steps()
                frames[i], actions[i], recording[i] = [obs["rgb"][i]], [], leading[i] == 0
                policy.reset(i)
            elif leading[i] > 0:
                leading[i] -= 1
                if leading[i] == 0:  # the lead-in is over: the recording starts at this frame
                    frames[i], actions[i], recording[i] = [obs["rgb"][i]], [], True
                    policy.reset(i)
            elif recording[i]:
                frames[i].append(obs["rgb"][i])
                actions[i].append(int(step_actions[i]))
                if len(frames[i]) == max_frames:
                    yield np.stack(frames[i]), np.asarray(actions[i], dtype=np.int64)
                    frames[i], actions[i], recording[i] = [], [], False


def generate_procgen(
    out: str | Path,
    env: str = "coinrun",
    episodes: int = 50,
    seed: int = 0,
    max_frames: int = 500,
    min_repeat: int = 6,
    max_repeat: int = 16,
    distribution_mode: str = "easy",
    lead_in: int | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Record `episodes` Procgen episodes (64x64, 15 fps) with raw-action sidecars into `out`.

    `lead_in`: at most this many unrecorded steps of the game's lead-in action before each recording
    (None: the game's default in `PROCGEN_LEAD_IN`, 0: none); games without a lead-in action ignore it.
    Raises GameplayError for an unknown game or mode, a bad option, or a missing procgen install."""
    ProcgenGym3Env = _import_procgen()
    name = env.lower()
    if name not in PROCGEN_DISTINCT_ACTIONS:
        raise GameplayError(f"unknown Procgen game {env!r}; choose one of {', '.join(PROCGEN_DISTINCT_ACTIONS)}")
    if distribution_mode not in PROCGEN_MODE_GAMES:
        raise GameplayError(
            f"unknown distribution_mode {distribution_mode!r}; choose one of {', '.join(PROCGEN_MODE_GAMES)}"
        )
    if name not in PROCGEN_MODE_GAMES[distribution_mode]:
        raise GameplayError(
            f"Procgen has no {distribution_mode!r} mode for {name}; "
            f"it has one for {', '.join(PROCGEN_MODE_GAMES[distribution_mode])}"
        )
    _check_common(episodes, max_frames)
    if lead_in is not None and lead_in < 0:
        raise GameplayError(f"lead_in must be >= 0 steps, got {lead_in}")
    lead_action, lead_default = PROCGEN_LEAD_IN.get(name, (None, 0))
    lead_steps = lead_default if lead_in is None else lead_in
    lead = (lead_action, lead_steps) if lead_action is not None and lead_steps > 0 else None
    actions, weights = procgen_policy_weights(name)
    policy = StickyRandomPolicy(
        actions, weights, min_repeat, max_repeat, np.random.default_rng(seed), num=PROCGEN_NUM_ENVS
    )
    game = ProcgenGym3Env(num=PROCGEN_NUM_ENVS, env_name=name, distribution_mode=distribution_mode, rand_seed=seed)
    meta = {
        "generator": "procgen",
        "env": name,
        "seed": seed,
        "distribution_mode": distribution_mode,
        "max_frames": max_frames,
        "min_episode_frames": MIN_EPISODE_FRAMES,
        "action_names": ["+".join(combo) or "NOOP" for combo in game.combos],
        "policy": {
            "actions": list(actions),
            "weights": [round(float(w), 4) for w in weights],
            "min_repeat": min_repeat,
            "max_repeat": max_repeat,
            "lead_in": {"action": lead[0], "max_steps": lead[1]} if lead else None,
        },
    }
    recorded = _procgen_episodes(game, policy, max_frames, lead, np.random.default_rng([seed, 1]))
    with EpisodeWriter(out, meta=meta, fps=PROCGEN_FPS, overwrite=overwrite) as writer:
        for _ in writer.progress(range(episodes), f"procgen {name}", progress):
            writer.add(*next(recorded))
    return writer.paths


# ------------------------------------------------------------------------------------------------ Atari


def _import_gymnasium_ale():
    try:
        import ale_py
        import gymnasium as gym
    except ImportError as e:
        raise GameplayError(f"Atari support is not installed ({e}); install with pip install 'genie[atari]'") from None
    gym.register_envs(ale_py)
    return gym


def atari_games() -> list[str]:
    """The Atari games ale-py provides (names as in `ALE/{name}-v5`)."""
    gym = _import_gymnasium_ale()
    return sorted(
        key[len("ALE/") : -len("-v5")] for key in gym.registry if key.startswith("ALE/") and key.endswith("-v5")
    )


def _resize(frame: np.ndarray, resolution: int) -> np.ndarray:
    from PIL import Image

    # Pillow's bilinear filter widens its support when shrinking (antialiased), so a 2-pixel ball survives
    return np.asarray(Image.fromarray(frame).resize((resolution, resolution), Image.Resampling.BILINEAR))


def _atari_episodes(
    game, policy: StickyRandomPolicy, seed: int, max_frames: int, resolution: int, fire: int | None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Episodes as (frames (T, res, res, 3), actions (T-1,)), forever; the first action is FIRE where the
    game has one (it launches the ball or starts the round). The terminal frame is included."""
    reset_seed: int | None = (
        seed  # only the first reset seeds (later ones continue its generator): seeding reloads the ROM
    )
    while True:
        obs, _ = game.reset(seed=reset_seed)
        reset_seed = None
        policy.reset(0)
        frames, actions = [_resize(obs, resolution)], []
        done = False
        while not done and len(frames) < max_frames:
            action = fire if fire is not None and not actions else int(policy()[0])
            obs, _, terminated, truncated, _ = game.step(action)
            frames.append(_resize(obs, resolution))
            actions.append(action)
            done = terminated or truncated
        if len(frames) >= MIN_EPISODE_FRAMES:
            yield np.stack(frames), np.asarray(actions, dtype=np.int64)


def generate_atari(
    out: str | Path,
    env: str = "Breakout",
    episodes: int = 50,
    seed: int = 0,
    max_frames: int = 500,
    resolution: int = 64,
    frame_skip: int = 4,
    overwrite: bool = False,
    progress: bool = True,
) -> list[Path]:
    """Record `episodes` Atari episodes (resolution x resolution, one frame per agent step) with action
    sidecars into `out`; actions are indices into the game's minimal action set, named in dataset.json."""
    gym = _import_gymnasium_ale()
    games = atari_games()
    name = next((g for g in games if g.lower() == env.lower()), None)
    if name is None:
        raise GameplayError(f"unknown Atari game {env!r}; choose one of {', '.join(games)}")
    _check_common(episodes, max_frames)
    if resolution < 8:
        raise GameplayError(f"resolution must be >= 8, got {resolution}")
    if frame_skip < 1:
        raise GameplayError(f"frame_skip must be >= 1, got {frame_skip}")
    game = gym.make(f"ALE/{name}-v5", frameskip=frame_skip, repeat_action_probability=ATARI_STICKY_PROBABILITY)
    action_names = game.unwrapped.get_action_meanings()
    fire = action_names.index("FIRE") if "FIRE" in action_names else None
    num_actions = len(action_names)
    policy = StickyRandomPolicy(range(num_actions), np.ones(num_actions), *ATARI_REPEAT, np.random.default_rng(seed))
    meta = {
        "generator": "atari",
        "env": name,
        "seed": seed,
        "frame_skip": frame_skip,
        "repeat_action_probability": ATARI_STICKY_PROBABILITY,
        "resolution": resolution,
        "max_frames": max_frames,
        "min_episode_frames": MIN_EPISODE_FRAMES,
        "action_names": action_names,
        "policy": {
            "actions": list(range(num_actions)),
            "weights": [round(1 / num_actions, 4)] * num_actions,
            "min_repeat": ATARI_REPEAT[0],
            "max_repeat": ATARI_REPEAT[1],
            "first_action": "FIRE" if fire is not None else None,
        },
    }
    recorded = _atari_episodes(game, policy, seed, max_frames, resolution, fire)
    try:
        with EpisodeWriter(
            out, meta=meta, fps=max(1, round(ATARI_FPS_BASE / frame_skip)), overwrite=overwrite
        ) as writer:
            for _ in writer.progress(range(episodes), f"atari {name}", progress):
                writer.add(*next(recorded))
    finally:
        game.close()
    return writer.paths
