"""True actions of recorded videos: reading the labelled transitions of a folder, and what a LAM makes of them.

A folder's ground-truth sidecars (`x.actions.npy`, genie/data/clips.py) are read only to score a model and to
name its codes, never during training: `read_labelled` gives labelled transitions with the LAM's codes and
latents, `action_meta` the bundle's genie.models.actionmap.ActionMap from a few training episodes.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from genie.data.clips import load_actions
from genie.data.video import read_video
from genie.models.actionmap import ActionMap
from genie.models.pixels import video_to_float
from genie.models.resolution import DEFAULT_FIT

log = logging.getLogger(__name__)


@dataclass
class LabelledTransitions:
    """Transitions of labelled videos with what the LAM makes of them (N transitions, frames R x R)."""

    before: np.ndarray  # uint8 (N, R, R, 3): frame t
    after: np.ndarray  # uint8 (N, R, R, 3): frame t+1
    labels: np.ndarray  # int64 (N,): the true action
    episodes: np.ndarray  # int64 (N,): index of the video it came from
    codes: np.ndarray  # int64 (N,): the LAM's latent action
    features: np.ndarray  # float32 (N, code_dim): the LAM's continuous latent before quantisation


def strided_labels(truth: np.ndarray, num_frames: int, frame_stride: int) -> np.ndarray:
    """The true action of each transition of frames 0, s, 2s, ... (s = frame_stride): int64 ((num_frames-1)//s,),
    -1 where the s actions it spans differ (as genie.data.clips.VideoClips labels strided clips)."""
    count = (num_frames - 1) // frame_stride
    spans = np.asarray(truth[: count * frame_stride], dtype=np.int64).reshape(count, frame_stride)
    return np.where((spans == spans[:, :1]).all(1), spans[:, 0], -1)


@torch.no_grad()
def encode_episode(
    lam, frames: np.ndarray, device: str | torch.device = "cpu", batch_size: int = 32
) -> tuple[np.ndarray, np.ndarray]:
    """uint8 frames (T, H, W, 3) at the LAM's resolution -> latent codes int64 (T-1,) and latents float32
    (T-1, code_dim) (LatentActionModel.encode_video)."""
    video = video_to_float(torch.from_numpy(np.ascontiguousarray(frames)))[None].to(device)
    ids, z = lam.encode_video(video, batch_size)
    return ids[0].cpu().numpy(), z[0].cpu().numpy()


def read_labelled(
    lam,
    videos: list,
    resolution,
    frame_stride: int = 1,
    max_transitions: int | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: bool = False,
    fit: str = DEFAULT_FIT,
) -> LabelledTransitions | None:
    """The labelled transitions of `videos` (genie.data.VideoInfo each; those without a sidecar are skipped),
    frames at `resolution` (int or (H, W), fitted by genie.models.pixels.fit_frames with `fit`), every `frame_stride`-th
    frame; at most `max_transitions`, a seeded random choice
    spread over all of them. None when no transition is labelled."""
    from tqdm import tqdm

    plan = []  # (video index, labels of its transitions)
    for i, video in enumerate(videos):
        truth = load_actions(video.path, video.num_frames)
        if truth is not None and video.num_frames > frame_stride:
            plan.append((i, strided_labels(truth, video.num_frames, frame_stride)))
    candidates = [(i, t) for i, labels in plan for t in np.flatnonzero(labels >= 0)]
    if not candidates:
        return None
    if max_transitions is not None and len(candidates) > max_transitions:
        keep = np.sort(np.random.default_rng(seed).choice(len(candidates), max_transitions, replace=False))
        candidates = [candidates[k] for k in keep]
    chosen: dict[int, list[int]] = {}
    for i, t in candidates:
        chosen.setdefault(i, []).append(int(t))
    parts = []
    for i, labels in tqdm(plan, desc="labelled transitions", unit="video", disable=not progress):
        if i not in chosen:
            continue
        frames = read_video(videos[i].path, resolution=resolution, fit=fit)[::frame_stride][: len(labels) + 1]
        codes, features = encode_episode(lam, frames, device)
        t = np.asarray(chosen[i])
        parts.append((frames[t], frames[t + 1], labels[t], np.full(len(t), i), codes[t], features[t]))
    return LabelledTransitions(*(np.concatenate(column) for column in zip(*parts)))


def dataset_action_names(data_dir: str | Path) -> list[str] | None:
    """The action names a generator recorded in `<data_dir>/dataset.json` (None when there are none)."""
    try:
        names = json.loads((Path(data_dir) / "dataset.json").read_text()).get("action_names")
    except (OSError, ValueError, AttributeError):
        return None
    return [str(n) for n in names] if isinstance(names, list) and names else None


def action_meta(lam, videos: list, data_cfg, min_labels: int = 200, max_episodes: int = 8) -> dict:
    """meta["action_names"] and meta["action_map"] for a bundle, from the first training episodes with
    sidecars, taken in order until they hold `min_labels` labelled transitions or `max_episodes` episodes;
    {} when none of `videos` (genie.data.VideoInfo, the training files) has a sidecar.

    Names come from the folder's dataset.json; without one, "action0", "action1", ...
    """

    chosen, labelled = [], 0
    for video in videos:
        truth = load_actions(video.path, video.num_frames)
        if truth is None:
            continue
        chosen.append(video)
        labelled += int((strided_labels(truth, video.num_frames, data_cfg.frame_stride) >= 0).sum())
        if labelled >= min_labels or len(chosen) >= max_episodes:
            break
    device = next(lam.parameters()).device
    found = (
        read_labelled(lam, chosen, lam.cfg.resolution, data_cfg.frame_stride, device=device, fit=data_cfg.fit)
        if chosen
        else None
    )
    if found is None:
        return {}
    names = dataset_action_names(data_cfg.dir) or [f"action{a}" for a in range(int(found.labels.max()) + 1)]
    mapping = ActionMap.fit(found.codes, found.labels, lam.cfg.num_actions, names, len(chosen), data_cfg.frame_stride)
    log.info(
        "action map from %d labelled transitions of %d episodes: %s",
        mapping.labels,
        len(chosen),
        ", ".join(f"{c}={n or '?'}" for c, n in enumerate(mapping.code_names())),
    )
    return mapping.to_meta()
