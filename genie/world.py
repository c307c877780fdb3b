"""Backward-compatible path: the world model lives in genie.models.world (`from genie import WorldModel`)."""

from genie.models.world import ActionError, WorldModel, resolve_device  # noqa: F401
