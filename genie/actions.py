"""Backward-compatible path: true actions and ActionMap live in genie.data.actions."""

from genie.data.actions import *  # noqa: F401,F403
from genie.data.actions import ActionMap, action_meta, action_scores  # noqa: F401
