"""Does holding a key move the world the way the game does? The control measure of `genie eval` (issue 23).

ΔtPSNR (Genie, Bruce et al. 2024, sec. 3.3) asks whether the inferred actions make the rollout closer to the
real frames than random actions do; a world that barely moves passes it, since random actions change it a
little more. This measure asks instead what a player sees: hold one action for `frames` frames from a
held-out prompt and measure the motion it produces, against the motion the game makes for it.

Motion of a transition (dy, dx) in pixels, positive down and right:
- on the sprite world, the player's displacement (genie.metrics.player_position: the generator draws it in
  a colour nothing else has), so a held key is scored on the thing it moves;
- on Atari Breakout, the paddle's sideways displacement (`breakout_paddle_position`: the red bar in the bottom
  rows), since the global shift cannot see a few pixels of paddle;
- elsewhere the scene's global motion (`scene_shift`: the shift of the whole picture that best maps one frame
  onto the next), which is how a side-scroller's camera shows that the player walked or jumped.
`motion_tracker` picks one of the three ("player", "paddle", "scene") from a folder's dataset.json.

The references, from real held-out transitions (never the model's own frames):
- per latent code, the mean motion of the real transitions the LAM gives that code;
- per named key (with a bundle's action map: the code play binds to it), the mean motion of the real
  transitions whose true action is the key's action (from the sidecars).

`fidelity` of one held rollout = max(0, 1 - |D_gen - D_ref| / |D_ref|), D the displacement summed over the
held frames: 1 when the rollout moves exactly as far and the same way as the game, 0 for standing still,
moving the wrong way, or twice as far. On the sprite world (and Breakout) the reference is stepped from the
prompt's player (paddle) position and stops at the walls as the game does. Only references that move at least
`min_motion` pixels over the hold are scored (a "noop" has nothing to follow).

Keys (`control_scores`): `control_fidelity` (per named key if the bundle has an action map and the data has
labels, else per code) with `_ci95` over prompts, `key_fidelity`, `code_fidelity`, `key_fidelity/<name>`,
`lr_opposite_rate` (prompts where left and right each move the scene the way the game does: opposite
ways), `jump_rise_rate` (prompts where the jump/up key moves the way the game's jump does; both rates over
the prompts from which the game itself moves that way), and with labels
`code_purity` (the share of a code's real transitions that are its most common true action, weighted by
transitions) and `moving_code_purity_min` (the worst code whose real motion moves); `control` holds the
per-code and per-action motions for the record.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genie.metrics import bootstrap_interval, player_position

KEY_NAMES = ("left", "right", "jump", "down")  # the named keys scored: the arrows and space of genie play
MIN_REFERENCE_TRANSITIONS = 5  # a code or action seen less often than this in the real data has no reference
TRACKERS = ("player", "paddle", "scene")  # what a transition's motion is measured on (module docstring)


def motion_tracker(data_dir) -> str:
    """What the motion of `data_dir`'s transitions is measured on, from its dataset.json: "player" for the
    sprite world, "paddle" for Atari Breakout, "scene" otherwise (and for a folder without dataset.json)."""
    import json
    from pathlib import Path

    try:
        info = json.loads((Path(data_dir) / "dataset.json").read_text())
    except (OSError, ValueError):
        return "scene"
    if info.get("generator") == "sprites":
        return "player"
    if info.get("generator") == "atari" and str(info.get("env", "")).lower() == "breakout":
        return "paddle"
    return "scene"


def breakout_paddle_position(frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Position (row, col) in pixels of Breakout's paddle in float frames (..., 3, H, W) in [0, 1] -> (float64
    (..., 2), bool (...,) found); nan where not found.

    The paddle is the red bar (ALE colour (200, 72, 72); 7x2 pixels at 64x64) in rows 0.875..0.94 of the frame
    (rows 56-59 at 64x64), between the side walls (the outer 5 % of columns, grey); its column is the middle of
    the widest run of adjacent columns holding a red pixel there (so a ball, which has the paddle's colour, in
    the band elsewhere is ignored), its row the band's middle. Where the paddle slides under a wall only its
    visible part counts.
    """
    h, w = frames.shape[-2:]
    r0, r1 = int(round(0.875 * h)), max(int(round(0.875 * h)) + 1, int(round(0.94 * h)))
    c0, c1 = int(round(0.05 * w)), w - int(round(0.05 * w))
    band = frames[..., r0:r1, c0:c1].double()
    red = (band[..., 0, :, :] > 90 / 255) & (band[..., 0, :, :] > band[..., 1, :, :] + 25 / 255)
    columns = red.any(-2).double()  # (..., W')
    run = torch.zeros(columns.shape[:-1], dtype=torch.float64)
    best, end = torch.zeros_like(run), torch.zeros_like(run)
    for j in range(columns.shape[-1]):  # the widest run of red columns: its length and last column
        run = (run + 1) * columns[..., j]
        wider = run > best
        best, end = torch.where(wider, run, best), torch.where(wider, torch.full_like(end, float(j)), end)
    found = best > 0
    col = torch.where(found, c0 + end - (best - 1) / 2, torch.full_like(run, float("nan")))
    row = torch.where(found, torch.full_like(col, (r0 + r1 - 1) / 2), torch.full_like(col, float("nan")))
    return torch.stack([row, col], -1), found


# the trackers that follow one object: its position (row, col) and whether it was found, in float frames
LOCATORS = {"player": player_position, "paddle": breakout_paddle_position}


def scene_shift(before: torch.Tensor, after: torch.Tensor, max_shift: int | None = None) -> torch.Tensor:
    """The global motion from `before` to `after`, float frames (N, 3, H, W) each -> float64 (N, 2) (dy, dx)
    in pixels: `after` looks most like `before` moved by (dy, dx) (positive: content moved down, right).

    Exhaustive global block matching: the integer shift within +-max_shift pixels (default an eighth of the
    shorter side) with the least mean squared error over the frame's centre (the border that a shift brings in
    left out), refined to sub-pixel by a parabola through the errors on each axis; ties go to the smallest
    shift, so a static or flat scene gives (0, 0). Phase correlation was tried first and read CoinRun as
    static: its background stays put while the level scrolls, and the background's edges win the peak.
    """
    n, _, h, w = before.shape
    r = max_shift if max_shift is not None else max(1, min(h, w) // 8)
    target = after[..., r : h - r, r : w - r].float()
    shifts = range(-r, r + 1)
    errors = torch.empty(n, 2 * r + 1, 2 * r + 1, dtype=torch.float64)
    for i, dy in enumerate(shifts):
        for j, dx in enumerate(shifts):
            moved = before[..., r - dy : h - r - dy, r - dx : w - r - dx].float()
            errors[:, i, j] = (moved - target).square().mean((1, 2, 3)).double() + 1e-9 * (dy * dy + dx * dx)
    flat = errors.flatten(1).argmin(1)
    iy, ix = flat // (2 * r + 1), flat % (2 * r + 1)
    idx = torch.arange(n)

    def refine(lo: torch.Tensor, mid: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
        denom = lo - 2 * mid + hi
        return torch.where(denom > 1e-12, 0.5 * (lo - hi) / denom, torch.zeros_like(denom)).clamp(-0.5, 0.5)

    def at(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return errors[idx, y.clamp(0, 2 * r), x.clamp(0, 2 * r)]

    mid = at(iy, ix)
    inner_y, inner_x = (iy > 0) & (iy < 2 * r), (ix > 0) & (ix < 2 * r)
    fy = torch.where(inner_y, refine(at(iy - 1, ix), mid, at(iy + 1, ix)), torch.zeros_like(mid))
    fx = torch.where(inner_x, refine(at(iy, ix - 1), mid, at(iy, ix + 1)), torch.zeros_like(mid))
    return torch.stack([iy.double() - r + fy, ix.double() - r + fx], -1)


def transition_motion(frames: torch.Tensor, tracker: str) -> torch.Tensor:
    """Motion of each consecutive pair of float frames (N, T, 3, H, W) -> float64 (N, T-1, 2) (dy, dx) pixels,
    measured on `tracker` (`TRACKERS`): the sprite world's player ("player": nan where it is not drawn in one
    piece in either frame), Breakout's paddle ("paddle": sideways only, nan where it is not found), or the
    scene's global motion ("scene": `scene_shift`). Raises ValueError for another tracker."""
    n, t = frames.shape[:2]
    if tracker in LOCATORS:
        pos, _ = LOCATORS[tracker](frames.float().cpu())
        return (pos[:, 1:] - pos[:, :-1]).double()
    if tracker != "scene":
        raise ValueError(f"unknown motion tracker {tracker!r}; choose one of {', '.join(TRACKERS)}")
    before = frames[:, :-1].flatten(0, 1).cpu()
    after = frames[:, 1:].flatten(0, 1).cpu()
    return scene_shift(before, after).reshape(n, t - 1, 2)


@dataclass
class RealTransitions:
    """Real transitions of held-out videos: codes int64 (N,), true labels int64 (N,) (-1 unknown), motion
    float64 (N, 2) (dy, dx) pixels (nan: not measurable), video int64 (N,) the video of each."""

    codes: np.ndarray
    labels: np.ndarray
    motion: np.ndarray
    video: np.ndarray

    def mean_motion(self, mask: np.ndarray) -> np.ndarray | None:
        """Mean (dy, dx) of the selected transitions with a measured motion; None under
        MIN_REFERENCE_TRANSITIONS of them."""
        chosen = self.motion[mask]
        chosen = chosen[np.isfinite(chosen).all(1)]
        return chosen.mean(0) if len(chosen) >= MIN_REFERENCE_TRANSITIONS else None


@dataclass
class HeldRollouts:
    """Each code held from each prompt: displacement float64 (P, K, 2) (dy, dx) pixels summed over `frames`
    generated frames (nan: the player was lost, which scores 0), per-frame motion (P, K, frames, 2), the prompt's
    player position (P, 2) on the sprite world (else nan), and the video (P,) each prompt comes from."""

    displacement: np.ndarray
    per_frame: np.ndarray
    start: np.ndarray
    video: np.ndarray
    frames: int


@torch.no_grad()
def hold_codes(
    world, prompts: np.ndarray, video: np.ndarray, frames: int, tracker: str, seed: int = 0, batch_size: int = 64
) -> HeldRollouts:
    """Hold each of the world's latent codes for `frames` steps from each uint8 prompt frame (P, H, W, 3), the
    motion measured on `tracker` (`transition_motion`).

    `world` is anything with genie.models.world.WorldModel's environment API (reset(prompt (B, 1, H, W, 3)),
    step_float(actions (B,)) -> float (B, 3, H, W)) and num_actions.
    """
    k = world.num_actions
    jobs = [(p, c) for p in range(len(prompts)) for c in range(k)]
    motion = np.full((len(prompts), k, frames, 2), np.nan)
    displacement = np.full((len(prompts), k, 2), np.nan)
    first = torch.from_numpy(np.ascontiguousarray(prompts))
    start = np.full((len(prompts), 2), np.nan)
    locate = LOCATORS.get(tracker)
    if locate is not None:
        start = locate(_float(first))[0].double().numpy()
    for offset in range(0, len(jobs), batch_size):
        chunk = jobs[offset : offset + batch_size]
        p_idx = np.array([p for p, _ in chunk])
        codes = torch.tensor([c for _, c in chunk])
        world.reset(first[p_idx][:, None].numpy(), seed=seed + offset)
        generated = torch.stack([world.step_float(codes).float().cpu() for _ in range(frames)], 1)  # (B, F, 3, H, W)
        video_frames = torch.cat([_float(first[p_idx])[:, None], generated], 1)  # (B, 1+F, 3, H, W)
        step = transition_motion(video_frames, tracker).numpy()  # (B, F, 2)
        for row, (p, c) in enumerate(chunk):
            motion[p, c] = step[row]
        if locate is not None:  # where the tracked object ends up: one frame that loses it does not void the hold
            pos, _ = locate(generated[:, -1])
            end = pos.double().numpy()
            displacement[p_idx, codes.numpy()] = end - start[p_idx]
        else:
            displacement[p_idx, codes.numpy()] = step.sum(1)
    return HeldRollouts(displacement, motion, start, np.asarray(video), frames)


def _float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [0, 1]."""
    return frames.movedim(-1, -3).float() / 255.0


def reference_displacement(step: np.ndarray, frames: int, start: np.ndarray, bounds: tuple | None) -> np.ndarray:
    """Where a per-frame motion `step` (2,) takes the player in `frames` frames from `start` (P, 2): float (P, 2).
    With `bounds` ((low y, low x), (high y, high x)) of the tracked position (the sprite world's player,
    Breakout's paddle), each step stops at the walls as the game's does; without, frames * step for every prompt."""
    if bounds is None:
        return np.broadcast_to(step * frames, (len(start), 2)).copy()
    low, high = (np.asarray(b, dtype=np.float64) for b in bounds)
    pos = start.copy()
    for _ in range(frames):
        pos = np.clip(pos + step, low, high)
    return pos - start


def fidelity(generated: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """max(0, 1 - |generated - reference| / |reference|) for displacements (..., 2); nan generated (the player
    lost) scores 0."""
    error = np.linalg.norm(generated - reference, axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero reference is never scored (min_motion)
        score = 1 - error / np.linalg.norm(reference, axis=-1)
    return np.where(np.isfinite(score), np.clip(score, 0, None), 0.0)


def _name_index(names: list[str], name: str) -> int | None:
    from genie.models.actionmap import NAME_ALIASES

    lower = [n.lower() for n in names]
    for candidate in (name, *NAME_ALIASES.get(name, ())):
        if candidate in lower:
            return lower.index(candidate)
    return None


def named_keys(action_map, names: list[str]) -> dict[str, tuple[int, int]]:
    """{key name: (latent code play binds to it, true action id)} for KEY_NAMES the game and the map know."""
    from genie.models.world import ActionError

    keys = {}
    for name in KEY_NAMES:
        index = _name_index(names, name)
        if index is None or action_map is None:
            continue
        try:
            keys[name] = (action_map.code_for(name), index)
        except ActionError:
            continue
    return keys


def control_scores(
    real: RealTransitions,
    held: HeldRollouts,
    num_codes: int,
    action_map=None,
    names: list[str] | None = None,
    bounds: tuple | None = None,
    min_motion: float = 1.0,
    seed: int = 0,
) -> dict:
    """The control measure (module docstring) from real transitions and held rollouts; a flat dict of floats
    (means with `_ci95` over prompts, clustered by video) plus `control`: per-code and per-action motions."""
    out: dict = {}
    per_prompt: dict[str, np.ndarray] = {}
    code_ref = {c: real.mean_motion(real.codes == c) for c in range(num_codes)}
    code_scores = []
    for c, step in code_ref.items():
        if step is None:
            continue
        ref = reference_displacement(step, held.frames, held.start, bounds)
        moving = np.linalg.norm(ref, axis=-1) >= min_motion
        score = np.where(moving, fidelity(held.displacement[:, c], ref), np.nan)
        if moving.any():
            code_scores.append(score)
    if code_scores:
        per_prompt["code_fidelity"] = np.nanmean(np.stack(code_scores, 1), 1)

    labelled = real.labels >= 0
    record: dict = {
        "frames": held.frames,
        "held_motion_by_code": _rows(np.nanmean(held.per_frame, (0, 2))),
        "real_motion_by_code": {str(c): _vec(v) for c, v in code_ref.items()},
        "real_transitions_by_code": {str(c): int((real.codes == c).sum()) for c in range(num_codes)},
    }
    if names and labelled.any():
        action_ref = {a: real.mean_motion(real.labels == a) for a in range(len(names))}
        record["real_motion_by_action"] = {names[a]: _vec(v) for a, v in action_ref.items()}
        record["real_transitions_by_action"] = {names[a]: int((real.labels == a).sum()) for a in range(len(names))}
        counts = np.zeros((num_codes, len(names)), dtype=np.int64)
        np.add.at(counts, (real.codes[labelled], real.labels[labelled]), 1)
        totals = counts.sum(1)
        purity = counts.max(1) / np.maximum(totals, 1)
        record["code_purity"] = {
            str(c): {
                "purity": float(purity[c]),
                "action": names[int(counts[c].argmax())],
                "transitions": int(totals[c]),
            }
            for c in range(num_codes)
            if totals[c]
        }
        out["code_purity"] = float((counts.max(1)).sum() / max(totals.sum(), 1))
        moving_codes = [
            c
            for c in range(num_codes)
            if totals[c] >= MIN_REFERENCE_TRANSITIONS
            and (ref := action_ref[int(counts[c].argmax())]) is not None
            and np.linalg.norm(ref) * held.frames >= min_motion
        ]
        if moving_codes:
            out["moving_code_purity_min"] = float(min(purity[c] for c in moving_codes))

        keys = named_keys(action_map, names)
        record["keys"] = {name: {"code": code, "action": names[a]} for name, (code, a) in keys.items()}
        key_scores, key_disp = [], {}
        for name, (code, a) in keys.items():
            if action_ref[a] is None:
                continue
            ref = reference_displacement(action_ref[a], held.frames, held.start, bounds)
            key_disp[name] = (held.displacement[:, code], ref)
            moving = np.linalg.norm(ref, axis=-1) >= min_motion
            if moving.any():
                score = np.where(moving, fidelity(held.displacement[:, code], ref), np.nan)
                per_prompt[f"key_fidelity/{name}"] = score
                key_scores.append(score)
        if key_scores:
            per_prompt["key_fidelity"] = np.nanmean(np.stack(key_scores, 1), 1)
        if "left" in key_disp and "right" in key_disp:
            (gl, rl), (gr, rr) = key_disp["left"], key_disp["right"]
            per_prompt["lr_opposite_rate"] = _both(_same_way(gl, rl, 1, min_motion), _same_way(gr, rr, 1, min_motion))
        if "jump" in key_disp:
            gen, ref = key_disp["jump"]
            per_prompt["jump_rise_rate"] = _same_way(gen, ref, 0, min_motion).astype(np.float64)

    headline = "key_fidelity" if "key_fidelity" in per_prompt else "code_fidelity"
    if headline in per_prompt:
        per_prompt["control_fidelity"] = per_prompt[headline]
        record["control_fidelity_from"] = "named keys" if headline == "key_fidelity" else "latent codes"
    for key, values in per_prompt.items():
        finite = np.isfinite(values)
        if finite.any():
            out[key] = float(values[finite].mean())
            out[f"{key}_ci95"] = list(bootstrap_interval(values, groups=held.video, seed=seed))
    out["control_prompts"] = int(len(held.video))
    out["control"] = record
    return out


def _same_way(generated: np.ndarray, reference: np.ndarray, axis: int, min_motion: float) -> np.ndarray:
    """float (P,): 1 where the generated displacement moves at least min_motion / 2 pixels along `axis` the way
    the reference does, else 0; nan where the reference itself moves under min_motion there (the game cannot
    go that way from this prompt, e.g. against a wall)."""
    ref, gen = reference[:, axis], generated[:, axis]
    ok = np.isfinite(gen) & (np.sign(gen) == np.sign(ref)) & (np.abs(gen) >= min_motion / 2)
    return np.where(np.abs(ref) >= min_motion, ok.astype(np.float64), np.nan)


def _both(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Elementwise AND of two 0/1 arrays with nan for "not scored": nan where either is nan."""
    return np.where(np.isfinite(a) & np.isfinite(b), a * b, np.nan)


def _vec(v) -> list[float] | None:
    return None if v is None else [round(float(x), 3) for x in v]


def _rows(array: np.ndarray) -> dict[str, list[float] | None]:
    return {str(i): (None if not np.isfinite(row).all() else _vec(row)) for i, row in enumerate(array)}


def real_transitions(
    videos: list, codes_of, resolution, fit: str, tracker: str, progress: bool = False, frame_stride: int = 1
):
    """Read `videos` (genie.data.VideoInfo each) at `resolution`, every `frame_stride`-th frame (one world step):
    (RealTransitions of all their transitions, list of uint8 frame arrays (T, H, W, 3), one a video).
    `codes_of(frames uint8 (T, H, W, 3))` -> the latent code of each transition, int (T-1,). A transition's true
    label is -1 where the `frame_stride` actions it spans differ (genie.data.labels.strided_labels)."""
    from tqdm import tqdm

    from genie.data.clips import load_actions
    from genie.data.labels import strided_labels
    from genie.data.video import read_video

    parts, clips = [], []
    for video in tqdm(videos, desc="control: real transitions", unit="video", disable=not progress):
        every = read_video(video.path, resolution=resolution, fit=fit)
        frames = every[::frame_stride]
        if len(frames) < 2:
            continue
        truth = load_actions(video.path, video.num_frames)
        labels = np.full(len(frames) - 1, -1, dtype=np.int64)
        if truth is not None and len(truth) >= len(every) - 1:
            labels[:] = strided_labels(truth, len(every), frame_stride)
        motion = transition_motion(_float(torch.from_numpy(np.ascontiguousarray(frames)))[None], tracker)[0].numpy()
        parts.append((np.asarray(codes_of(frames), dtype=np.int64), labels, motion, np.full(len(labels), len(clips))))
        clips.append(frames)
    return RealTransitions(*(np.concatenate(column) for column in zip(*parts))), clips


def choose_prompts(clips: list, frames: int, max_prompts: int, tracker: str, seed: int = 0):
    """One prompt frame a video (up to `max_prompts` videos), at a seeded random time with `frames` real frames
    after it; with the "player" or "paddle" tracker only frames where it is found. -> (uint8 (P, H, W, 3),
    video (P,))."""
    rng = np.random.default_rng(seed)
    prompts, owners = [], []
    for i in rng.permutation(len(clips)):
        video = clips[i]
        candidates = np.arange(max(1, len(video) - frames))
        if tracker in LOCATORS:
            found = LOCATORS[tracker](_float(torch.from_numpy(np.ascontiguousarray(video[candidates]))))[1].numpy()
            candidates = candidates[found]
        if len(candidates):
            prompts.append(video[int(rng.choice(candidates))])
            owners.append(int(i))
        if len(prompts) == max_prompts:
            break
    if not prompts:
        raise ValueError("no prompt frame for the control measure (no video, or the player is never drawn)")
    return np.stack(prompts), np.asarray(owners)


def sprite_bounds(data_dir, frame_size) -> tuple | None:
    """The range of the sprite world's player centroid ((low y, low x), (high y, high x)) in pixels at
    `frame_size` (H, W), from the generator's dataset.json (player side, frame size); None for another folder."""
    import json
    from pathlib import Path

    try:
        info = json.loads((Path(data_dir) / "dataset.json").read_text())
    except (OSError, ValueError):
        return None
    if info.get("generator") != "sprites":
        return None
    height, width = info.get("size", 32), info.get("width") or info.get("size", 32)
    scale = np.array(frame_size, dtype=np.float64) / np.array([height, width])
    half = (info.get("player", 6) - 1) / 2
    low = half * scale
    high = (np.array([height, width]) - 1 - half) * scale
    return tuple(low), tuple(high)


def paddle_bounds(clips: list) -> tuple | None:
    """The range of Breakout's paddle position ((low y, low x), (high y, high x)) in pixels over the uint8 frames
    of `clips` (T, H, W, 3) each: where the walls stop it, as the real frames show. None when it is never found."""
    pos = torch.cat([breakout_paddle_position(_float(torch.from_numpy(np.ascontiguousarray(c))))[0] for c in clips])
    pos = pos[~pos.isnan().any(-1)].numpy()
    if not len(pos):
        return None
    return tuple(pos.min(0)), tuple(pos.max(0))


def evaluate_control(
    world, videos: list, data_dir, frames: int = 10, max_prompts: int = 24, seed: int = 0, progress: bool = True
) -> dict:
    """The control measure of `world` on held-out `videos` of `data_dir`: `control_scores` with the world's LAM
    coding the real transitions and its bundle's action map naming the keys."""
    from genie.data.labels import encode_episode
    from genie.models.actionmap import ActionMap
    from genie.models.resolution import DEFAULT_FIT

    tracker = motion_tracker(data_dir)
    fit = getattr(world, "fit", DEFAULT_FIT)
    stride = getattr(world, "frame_stride", 1)
    real, clips = real_transitions(
        videos,
        lambda f: encode_episode(world.lam, f, world.device)[0],
        world.resolution,
        fit,
        tracker,
        progress,
        stride,
    )
    prompts, owners = choose_prompts(clips, frames, max_prompts, tracker, seed)
    held = hold_codes(world, prompts, owners, frames, tracker, seed)
    action_map = ActionMap.from_meta(world.meta)
    names = action_map.names if action_map is not None else None
    if names is None:
        from genie.data.labels import dataset_action_names

        names = dataset_action_names(data_dir)
    bounds = None
    if tracker == "player":
        bounds = sprite_bounds(data_dir, prompts.shape[1:3])
    elif tracker == "paddle":
        bounds = paddle_bounds(clips)
    return control_scores(real, held, world.num_actions, action_map, names, bounds, seed=seed)


def motion_by_action(
    data_dir, resolution=64, max_videos: int = 64, min_motion: float = 0.25, frame_stride: int = 1
) -> dict:
    """Does each control of a labelled folder produce its motion? Per true action: transitions, mean motion
    (dy, dx) pixels a frame (measured on `motion_tracker(data_dir)`: `transition_motion`), and the share of
    its transitions whose motion goes each way by at least `min_motion` pixels ("left" = the measured motion
    points left: for a scene, content shifting left, which is the camera following the player right).
    With `frame_stride` S a transition is frames t -> t+S whose S actions agree (pixels per S frames).
    Raises ValueError for a folder without action names or sidecars."""
    from genie.data.clips import usable_videos
    from genie.data.labels import dataset_action_names

    names = dataset_action_names(data_dir)
    if not names:
        raise ValueError(f"{data_dir}: no action names in dataset.json (not a recorded folder)")
    videos = usable_videos(data_dir, 2, progress=False)[:max_videos]
    no_codes = lambda f: np.zeros(len(f) - 1)  # noqa: E731
    real, _ = real_transitions(videos, no_codes, resolution, "resize", motion_tracker(data_dir), False, frame_stride)
    if not (real.labels >= 0).any():
        raise ValueError(f"{data_dir}: no *.actions.npy sidecars")
    table = {}
    for a, name in enumerate(names):
        motion = real.motion[real.labels == a]
        motion = motion[np.isfinite(motion).all(1)]
        if not len(motion):
            continue
        dy, dx = motion[:, 0], motion[:, 1]
        table[name] = {
            "transitions": int(len(motion)),
            "mean_motion": _vec(motion.mean(0)),
            "left": float((dx <= -min_motion).mean()),
            "right": float((dx >= min_motion).mean()),
            "up": float((dy <= -min_motion).mean()),
            "down": float((dy >= min_motion).mean()),
        }
    return table
