"""Backward-compatible path: the Procgen and Atari generators live in genie.data.gameplay."""

from genie.data.gameplay import *  # noqa: F401,F403
from genie.data.gameplay import StickyRandomPolicy, generate_atari, generate_procgen  # noqa: F401
