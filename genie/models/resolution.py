"""Frame sizes. A `resolution` is one number for square frames (64 -> 64x64) or height x width
((90, 160) is Genie's 160x90); `fit` says how frames of another aspect ratio are brought to it
(genie.models.pixels.fit_frames does it):

- "crop" (the default): centre-crop to the target's aspect ratio, then resize. Nothing is squashed; the
  edges of the longer side are lost (none when the aspects already match, as 1280x720 -> 160x90).
- "pad": resize to fit inside, keeping the aspect ratio, and pad with black bars. Nothing is lost or
  squashed, but the bars cost tokens and model capacity.
- "resize": resize to the target, changing the aspect ratio (squashing) if it differs: what genie did
  before `fit` existed, and what a bundle without a recorded fit was trained with.

Plain Python, no torch: the models, the data layer and the configs all use it.
"""

from __future__ import annotations

import math
import re

Resolution = int | tuple[int, int]  # the type of a `resolution` config field

FITS = ("crop", "pad", "resize")
DEFAULT_FIT = "crop"


def frame_size(resolution) -> tuple[int, int]:
    """A resolution (int R, or (H, W) as a tuple or list) -> (H, W) ints."""
    if isinstance(resolution, (tuple, list)):
        height, width = resolution
        return int(height), int(width)
    return int(resolution), int(resolution)


def same_frame_size(a, b) -> bool:
    """True when resolutions `a` and `b` (int R for R x R, or (H, W)) give the same frame size."""
    return frame_size(a) == frame_size(b)


def canonical_resolution(value, key: str = "data.resolution") -> int | tuple[int, int]:
    """A resolution as a config holds it (64, "64", [90, 160], (90, 160), "90x160", "90,160") -> int when
    square, else (H, W). Raises ValueError naming `key` for anything else (sides must be positive ints)."""
    form = f"{key} must be one number (64) or height x width ([90, 160] or 90x160)"
    if isinstance(value, str):
        parts = [p for p in re.split(r"[x,\s]+", value.strip().strip("[]()").lower()) if p]
        value = parts[0] if len(parts) == 1 else parts
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            value = value[0]
        elif len(value) != 2:
            raise ValueError(f"{form}, got {value!r}")
    sides = value if isinstance(value, (list, tuple)) else [value]
    try:
        if any(isinstance(s, bool) or float(s) != int(float(s)) for s in sides):
            raise ValueError
        ints = [int(float(s)) for s in sides]
    except (TypeError, ValueError):
        raise ValueError(f"{form}, got {value!r}") from None
    if min(ints) < 1:
        raise ValueError(f"{form} with positive sides, got {value!r}")
    if len(ints) == 1 or ints[0] == ints[1]:
        return ints[0]
    return ints[0], ints[1]


def format_resolution(resolution) -> str:
    """64 -> "64", (90, 160) -> "[90, 160]": the form a config file takes."""
    height, width = frame_size(resolution)
    return str(height) if height == width else f"[{height}, {width}]"


def json_resolution(resolution) -> int | list[int]:
    """The resolution as JSON keeps it (int, or [H, W]): cache keys compare what they read back from JSON."""
    height, width = frame_size(resolution)
    return height if height == width else [height, width]


def patch_grid(resolution, patch: int) -> tuple[int, int]:
    """Tokens per frame (h, w) of frames at `resolution` cut into `patch` x `patch` patches; ValueError when
    the patch does not divide both sides."""
    height, width = frame_size(resolution)
    if patch < 1 or height % patch or width % patch:
        raise ValueError(f"resolution {format_resolution(resolution)} must be divisible by patch size {patch}")
    return height // patch, width // patch


def patch_fix(resolution, patch: int, resolution_key: str = "data.resolution", patch_key: str = "model.patch") -> str:
    """A one-line error naming the config fields and the fix, for a patch that does not divide both sides."""
    height, width = frame_size(resolution)
    common = math.gcd(height, width)
    patches = sorted((p for p in range(2, common + 1) if common % p == 0), key=lambda p: (abs(p - patch), p))[:3]
    fitted = tuple(max(patch, round(side / patch) * patch) for side in (height, width))
    fix = f"{resolution_key}={format_resolution(fitted)}".replace(" ", "")
    if patches:
        fix = f"{patch_key}={' or '.join(map(str, sorted(patches)))} (divides both sides), or {fix}"
    return (
        f"{resolution_key} {format_resolution(resolution)} must be divisible by {patch_key} {patch} "
        f"on both sides: set {fix}"
    )


def grid_value(grid: tuple[int, int]) -> int | tuple[int, int]:
    """(h, w) -> int when square (the form the configs keep), else (h, w)."""
    return grid[0] if grid[0] == grid[1] else (grid[0], grid[1])


def check_fit(fit: str, key: str = "data.fit") -> str:
    """`fit` if it is one of FITS ("crop", "pad", "resize"), else ValueError naming `key`."""
    if fit not in FITS:
        raise ValueError(f"{key} must be one of {', '.join(FITS)}, got {fit!r}")
    return fit
