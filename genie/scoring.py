"""Scoring latent actions against true ones: how much of the true actions the frames show, and how much of it a
LAM's codes name (`genie eval`).

Both read a folder's ground-truth sidecars (`x.actions.npy`, genie/data/clips.py), never during training:

- `idm_ceiling_acc`: the held-out accuracy of a supervised inverse-dynamics model (IDM: frames t and t+1 ->
  true action), trained on the same labels a LAM is scored against. Some actions do not show in the frames
  (a jump in mid-air looks like doing nothing, walking into a wall like standing still), so nothing that
  reads frames can name them; the IDM's accuracy says how much can be named at all, the ceiling for
  `action_probe_acc` (README, Results). The IDM is the idea of Baker et al. 2022, "Video PreTraining (VPT)",
  there a large model labelling video for behaviour cloning, here a small CNN.
- the accuracy of the bundle's genie.models.actionmap.ActionMap (each code named by its most frequent true
  action, counted from a few labelled training episodes as the Genie paper maps latent actions to real ones).

`action_scores` measures both on a folder of labelled videos for a bundle, beside a linear probe of the
LAM's latents, all on the same transitions and the same train/held-out split.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genie.data.clips import usable_videos
from genie.data.labels import read_labelled
from genie.metrics import fit_probe_accuracy, normalized_mutual_info
from genie.models.actionmap import ActionMap
from genie.models.pixels import video_to_float
from genie.models.resolution import DEFAULT_FIT

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------- the IDM ceiling


def held_out_split(n: int, train_fraction: float = 0.5, seed: int = 0, groups=None) -> np.ndarray:
    """Which of `n` samples train: bool (n,), the rest are held out.

    Without `groups`, a seeded random half: the same permutation and cut as
    genie.metrics.linear_probe_accuracy with the same seed and n, so both score the same held-out samples.
    With `groups` (n,) (e.g. the episode of each transition), whole groups go to one side, about
    `train_fraction` of the samples to training: near-identical neighbours of one episode can then not be
    remembered across the split.
    """
    train = np.zeros(n, dtype=bool)
    rng = np.random.default_rng(seed)
    if groups is None:
        order = rng.permutation(n)
        train[order[: max(1, min(n - 1, int(n * train_fraction)))]] = True
        return train
    groups = np.asarray(groups).reshape(-1)
    if len(groups) != n:
        raise ValueError(f"groups has {len(groups)} entries for {n} samples")
    unique = rng.permutation(np.unique(groups))
    if len(unique) < 2:
        raise ValueError("a split by group needs at least two groups")
    sizes = np.cumsum([(groups == g).sum() for g in unique])
    count = int(np.clip(np.argmin(np.abs(sizes - n * train_fraction)) + 1, 1, len(unique) - 1))
    return np.isin(groups, unique[:count])


def _float_frames(frames) -> torch.Tensor:
    """uint8 (N, H, W, 3) or float (N, 3, H, W) in [0, 1], numpy or torch -> float (N, 3, H, W) in [0, 1]."""
    x = frames if isinstance(frames, torch.Tensor) else torch.from_numpy(np.ascontiguousarray(frames))
    if x.dtype == torch.uint8:
        if x.ndim != 4 or x.shape[-1] != 3:
            raise ValueError(f"uint8 frames must be (N, H, W, 3), got {tuple(x.shape)}")
        return video_to_float(x)
    if not x.is_floating_point() or x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"frames must be uint8 (N, H, W, 3) or float (N, 3, H, W), got {x.dtype} {tuple(x.shape)}")
    return x.float()


class InverseDynamics(nn.Module):
    """A small CNN: frames t, t+1, float (B, 3, H, W) each -> logits over true actions (B, num_actions).

    It reads frame t and the change to t+1: the change shows what moved, frame t where (on the ground or in
    the air, against a wall or not). Max pooling to 4x4 keeps a small moving sprite visible anywhere.
    """

    def __init__(self, num_actions: int, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(6, width, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.GELU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.GELU(),
            nn.AdaptiveMaxPool2d(4),
            nn.Flatten(),
            nn.Linear(2 * width * 16, 128),
            nn.GELU(),
            nn.Linear(128, num_actions),
        )

    def forward(self, before: torch.Tensor, after: torch.Tensor) -> torch.Tensor:
        """float frames before and after, (N, 3, H, W) each -> action logits (N, num_actions)."""
        return self.net(torch.cat([before, after - before], dim=1))


def _classes(labels: np.ndarray, train: np.ndarray, held_out: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """The distinct labels of the scored samples (K,) and the class id 0..K-1 of every label (meaningless for
    the others), or None when there is nothing to score."""
    classes = np.unique(labels[train | held_out])
    if not train.any() or not held_out.any() or len(classes) < 2:
        return None
    return classes, np.searchsorted(classes, labels).clip(0, len(classes) - 1)


def idm_ceiling_acc(
    before,
    after,
    labels,
    train=None,
    groups=None,
    train_fraction: float = 0.5,
    seed: int = 0,
    steps: int = 400,
    batch_size: int = 64,
    lr: float = 3e-3,
    device: str | torch.device = "cpu",
) -> float:
    """Held-out accuracy of an inverse-dynamics model trained on the other transitions.

    before, after: the frames of each transition, uint8 (N, H, W, 3) or float (N, 3, H, W) in [0, 1] (numpy
    or torch, on the CPU). labels: int (N,), the true action of each transition, -1 = unknown (left out).
    train: optional bool (N,), which transitions train (the others are held out); by default
    `held_out_split(train_fraction, seed, groups)` of the known ones, which without `groups` is the split
    genie.metrics.linear_probe_accuracy draws for the same seed and known transitions.
    The IDM (`InverseDynamics`) trains for `steps` AdamW steps of `batch_size` transitions drawn with
    replacement: bounded time, and the same result for the same seed on the CPU. Returns nan when either
    side is empty or there is only one action.
    """
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    n = len(labels)
    if len(before) != n or len(after) != n:
        raise ValueError(f"{len(before)} and {len(after)} frames for {n} labels")
    known = labels >= 0
    if train is None:
        train = np.zeros(n, dtype=bool)
        train[known] = held_out_split(
            int(known.sum()), train_fraction, seed, None if groups is None else np.asarray(groups).reshape(-1)[known]
        )
    train = np.asarray(train, dtype=bool) & known
    held_out = known & ~train
    found = _classes(labels, train, held_out)
    if found is None:
        return float("nan")
    classes, y = found
    y = torch.from_numpy(y)
    device = torch.device(device)
    with torch.random.fork_rng(devices=[]):  # seeded weights without touching the caller's random state
        torch.manual_seed(seed)
        model = InverseDynamics(len(classes)).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    generator = torch.Generator().manual_seed(seed)
    train_idx, held_idx = np.flatnonzero(train), np.flatnonzero(held_out)

    def logits(idx: np.ndarray) -> torch.Tensor:
        return model(_float_frames(before[idx]).to(device), _float_frames(after[idx]).to(device))

    model.train()
    with torch.enable_grad():
        for _ in range(steps):
            idx = train_idx[torch.randint(len(train_idx), (batch_size,), generator=generator).numpy()]
            loss = F.cross_entropy(logits(idx), y[idx].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    model.eval()
    correct = 0
    with torch.no_grad():
        for start in range(0, len(held_idx), 256):
            idx = held_idx[start : start + 256]
            correct += int((logits(idx).argmax(-1).cpu() == y[idx]).sum())
    return correct / len(held_idx)


# ------------------------------------------------------------------------------------------ scores


def _probe_acc(features: np.ndarray, labels: np.ndarray, train: np.ndarray, steps: int = 300) -> float:
    """Held-out accuracy of a multinomial logistic regression (as genie.metrics.linear_probe_accuracy) on a
    given split: features (N, D), labels (N,), train bool (N,)."""
    held_out = ~train
    found = _classes(labels, train, held_out)
    if found is None:
        return float("nan")
    classes, y = found
    tr = torch.from_numpy(train)
    return fit_probe_accuracy(
        torch.from_numpy(np.asarray(features, dtype=np.float32)), torch.from_numpy(y), tr, ~tr, len(classes), steps
    )


def action_scores(
    world,
    data,
    frame_stride: int | None = None,
    max_transitions: int = 4096,
    split_by: str = "episode",
    train_fraction: float = 0.5,
    seed: int = 0,
    idm_steps: int = 400,
    progress: bool = False,
) -> dict:
    """How well a bundle's latent actions name the true ones, beside how well anything could, on one split.

    world: a genie.models.world.WorldModel. data: a folder of videos with `*.actions.npy` sidecars, or a list of
    genie.data.VideoInfo (e.g. the held-out files genie.data.heldout.select_videos picks). At most
    `max_transitions` labelled transitions (a seeded random choice) at the model's resolution, every
    `frame_stride`-th frame (default: the stride the bundle's action map was learned at, else 1). They are
    split into train and held-out halves by episode (`split_by="episode"`: no episode on both sides) or by
    transition (`"transition"`: linear_probe_accuracy's split), and every score is on the held-out half:

    - idm_ceiling_acc: an inverse-dynamics model trained on the train half (`idm_ceiling_acc`).
    - action_probe_acc: a linear probe from the LAM's continuous latents, trained on the train half.
    - action_nmi: normalised mutual information of latent codes and true actions.
    - action_map_acc: a map from codes to true actions counted on the train half (`ActionMap`): how often a
      code's name is right. action_bundle_map_acc: the same for the map stored in the bundle, when it has one.
    - action_majority_acc: the share of the most frequent true action (what naming one action for all gets).
    Plus action_transitions, action_train_transitions, action_episodes, action_split. {} when nothing is labelled.
    """

    if split_by not in ("episode", "transition"):
        raise ValueError(f"split_by must be 'episode' or 'transition', got {split_by!r}")
    stored = ActionMap.from_meta(getattr(world, "meta", None))
    if frame_stride is None:
        frame_stride = stored.frame_stride if stored is not None else getattr(world, "frame_stride", 1)
    videos = (
        usable_videos(data, min_frames=frame_stride + 1, progress=progress)
        if isinstance(data, (str, Path))
        else list(data)
    )
    found = read_labelled(
        world.lam,
        videos,
        world.resolution,
        frame_stride,
        max_transitions,
        seed,
        world.device,
        progress,
        fit=getattr(world, "fit", DEFAULT_FIT),
    )
    if found is None:
        return {}
    groups = found.episodes if split_by == "episode" else None
    if groups is not None and len(np.unique(groups)) < 2:
        log.warning("one labelled episode: action scores split it by transition")
        groups = None
    train = held_out_split(len(found.labels), train_fraction, seed, groups)
    held_out = ~train
    scores = {
        "idm_ceiling_acc": idm_ceiling_acc(
            found.before, found.after, found.labels, train=train, seed=seed, steps=idm_steps, device=world.device
        ),
        "action_probe_acc": _probe_acc(found.features, found.labels, train),
        "action_nmi": normalized_mutual_info(found.codes[held_out], found.labels[held_out]),
    }
    learned = ActionMap.fit(
        found.codes[train], found.labels[train], world.num_actions, [str(a) for a in range(int(found.labels.max()) + 1)]
    )
    scores["action_map_acc"] = learned.accuracy(found.codes[held_out], found.labels[held_out])
    if stored is not None and stored.num_codes == world.num_actions:
        scores["action_bundle_map_acc"] = stored.accuracy(found.codes[held_out], found.labels[held_out])
    counts = np.bincount(found.labels[held_out])
    scores.update(
        {
            "action_majority_acc": float(counts.max() / counts.sum()),
            "action_transitions": int(len(found.labels)),
            "action_train_transitions": int(train.sum()),
            "action_episodes": int(len(np.unique(found.episodes))),
            "action_split": split_by,
        }
    )
    return scores
