"""Exceptions that mean "the user asked for something that cannot be done"; the CLI prints them in one line."""

from genie.config import ConfigError
from genie.data.clips import DataError
from genie.data.recording import DatasetExistsError
from genie.data.video import VideoError
from genie.models.checkpoint import RunError
from genie.models.world import ActionError

USER_ERRORS = (
    ConfigError,
    DataError,
    DatasetExistsError,
    RunError,
    VideoError,
    FileNotFoundError,
    FloatingPointError,
    ActionError,
)
