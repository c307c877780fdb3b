"""What each latent code of a world means in a game's named actions, and the browser keys bound to them.

`ActionMap` counts, from a few labelled episodes, which true action each latent code stands for, as the Genie
paper (Bruce et al. 2024, "Genie: Generative Interactive Environments") maps latent actions to real ones from a
few hundred expert labels. A bundle stores it in meta["action_names"] and meta["action_map"]
(genie.data.labels.action_meta builds it at export), so play and rollout take real controls
(`code_for("left")`, `key_bindings()`). Plain numpy: play loads it without the data or training layers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genie.models.world import ActionError

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
