"""True actions: how much of them the frames show, and which latent action means which of them.

Both read a folder's ground-truth sidecars (`x.actions.npy`, genie/data/clips.py), never during training:

- `idm_ceiling_acc`: the held-out accuracy of a supervised inverse-dynamics model (IDM: frames t and t+1 ->
  true action), trained on the same labels a LAM is scored against. Some actions do not show in the frames
  (a jump in mid-air looks like doing nothing, walking into a wall like standing still), so nothing that
  reads frames can name them; the IDM's accuracy says how much can be named at all, the ceiling for
  `action_probe_acc` (README, Results). The IDM is the idea of Baker et al. 2022, "Video PreTraining (VPT)",
  there a large model labelling video for behaviour cloning, here a small CNN.
- `ActionMap`: what each latent code means in the game's named actions, counted from a few labelled
  episodes, as the Genie paper (Bruce et al. 2024, "Genie: Generative Interactive Environments") maps
  latent actions to real ones from a few hundred expert labels. The bundle stores it in
  meta["action_names"] and meta["action_map"] (`action_meta`), so play and rollout take real controls.

`action_scores` measures both on a folder of labelled videos for a bundle, beside a linear probe of the
LAM's latents, all on the same transitions and the same train/held-out split.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from genie.data.clips import load_actions, usable_videos
from genie.data.video import read_video
from genie.metrics import fit_probe_accuracy, normalized_mutual_info
from genie.models.pixels import video_to_float
from genie.models.resolution import DEFAULT_FIT
from genie.models.world import ActionError

log = logging.getLogger(__name__)

# browser KeyboardEvent.key -> the action names it stands for, in order of preference (case-insensitive);
# procgen names its actions LEFT, RIGHT, UP (jump in the platformers), ALE LEFT, RIGHT, UP, FIRE
KEY_ACTIONS = {
    "ArrowLeft": ("left",),
    "ArrowRight": ("right",),
    "ArrowUp": ("up", "jump"),
    "ArrowDown": ("down",),
    " ": ("jump", "up", "fire"),
}
NAME_ALIASES = {"jump": ("up",)}  # a name a game may lack -> the names that stand for it there


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


# ------------------------------------------------------------------------------- latent -> true map


@dataclass
class ActionMap:
    """What each latent code means in a game's named actions, counted from labelled transitions.

    names: the game's action names (true action id -> name), from its dataset.json.
    counts: int64 (num_codes, len(names)); counts[c, a] = labelled transitions the LAM coded c whose true
    action was a. episodes, frame_stride: what the counts came from.
    """

    names: list[str]
    counts: np.ndarray
    episodes: int = 0
    frame_stride: int = 1

    @classmethod
    def fit(
        cls, codes, labels, num_codes: int, names: list[str], episodes: int = 0, frame_stride: int = 1
    ) -> ActionMap:
        """From latent codes (N,) and true actions (N,) (-1 = unknown, left out) of the same transitions."""
        codes, labels = np.asarray(codes, dtype=np.int64).reshape(-1), np.asarray(labels, dtype=np.int64).reshape(-1)
        known = labels >= 0
        if known.any() and labels[known].max() >= len(names):
            raise ValueError(f"true action {labels[known].max()} has no name ({len(names)} names)")
        counts = np.zeros((num_codes, len(names)), dtype=np.int64)
        np.add.at(counts, (codes[known], labels[known]), 1)
        return cls(list(names), counts, episodes, frame_stride)

    @property
    def num_codes(self) -> int:
        """How many latent action codes the map covers."""
        return self.counts.shape[0]

    @property
    def labels(self) -> int:
        """How many labelled transitions the map was counted from."""
        return int(self.counts.sum())

    def action_given_code(self) -> np.ndarray:
        """float (num_codes, len(names)): P(true action | code); zero rows for codes never seen."""
        return self.counts / np.maximum(self.counts.sum(1, keepdims=True), 1)

    def code_to_action(self) -> list[int | None]:
        """The most frequent true action of each code (None: the code was never seen)."""
        return [int(row.argmax()) if row.sum() else None for row in self.counts]

    def action_to_code(self) -> list[int | None]:
        """For each true action the code that most reliably produces it: argmax over the codes that were seen
        with it of P(action | code), add-one smoothed over the observed actions so that a code seen twice does
        not beat one seen a hundred times. None for actions never seen."""
        observed = max(int((self.counts.sum(0) > 0).sum()), 1)
        smoothed = (self.counts + 1) / (self.counts.sum(1, keepdims=True) + observed)
        smoothed = np.where(self.counts > 0, smoothed, -1.0)
        return [int(smoothed[:, a].argmax()) if self.counts[:, a].any() else None for a in range(len(self.names))]

    def code_names(self) -> list[str | None]:
        """The name of each code's most frequent true action (None: never seen)."""
        return [None if a is None else self.names[a] for a in self.code_to_action()]

    def code_for(self, name: str) -> int:
        """The latent code for an action name (case-insensitive; "jump" is UP where a game has no JUMP).
        Raises ActionError naming the accepted names."""
        wanted = name.strip().lower()
        lower = [n.lower() for n in self.names]
        best = self.action_to_code()
        for candidate in (wanted, *NAME_ALIASES.get(wanted, ())):
            if candidate in lower and best[lower.index(candidate)] is not None:
                return best[lower.index(candidate)]
        raise ActionError(f"no latent action means {name!r}; this model knows {', '.join(self.known_names())}")

    def known_names(self) -> list[str]:
        """The names that have a code (seen in the labelled transitions), lower case."""
        return [n.lower() for n, code in zip(self.names, self.action_to_code()) if code is not None]

    def key_bindings(self) -> dict[str, int]:
        """Browser KeyboardEvent.key -> latent code, for the arrow keys and space whose action the game has."""
        known = set(self.known_names())
        bindings = {}
        for key, candidates in KEY_ACTIONS.items():
            name = next((c for c in candidates if c in known), None)
            if name is not None:
                bindings[key] = self.code_for(name)
        return bindings

    def accuracy(self, codes, labels) -> float:
        """How often a code's name (its most frequent true action) is the true action, over labelled
        transitions (N,) (-1 = unknown, left out); a code never seen counts as wrong."""
        codes, labels = np.asarray(codes).reshape(-1), np.asarray(labels).reshape(-1)
        known = labels >= 0
        if not known.any():
            return float("nan")
        named = np.array([-1 if a is None else a for a in self.code_to_action()])
        return float((named[codes[known]] == labels[known]).mean())

    def to_meta(self) -> dict:
        """Plain data for the bundle: {"action_names": [...], "action_map": {...}}."""
        return {
            "action_names": list(self.names),
            "action_map": {
                "counts": self.counts.tolist(),
                "episodes": self.episodes,
                "labels": self.labels,
                "frame_stride": self.frame_stride,
                "code_to_action": self.code_to_action(),
                "action_to_code": self.action_to_code(),
            },
        }

    @classmethod
    def from_meta(cls, meta: dict | None) -> ActionMap | None:
        """The map stored in a bundle's meta, or None when it has none."""
        if not meta or "action_map" not in meta or "action_names" not in meta:
            return None
        stored = meta["action_map"]
        return cls(
            list(meta["action_names"]),
            np.asarray(stored["counts"], dtype=np.int64).reshape(-1, len(meta["action_names"])),
            int(stored.get("episodes", 0)),
            int(stored.get("frame_stride", 1)),
        )


# ------------------------------------------------------------------------------ labelled transitions


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
