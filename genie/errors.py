"""Exceptions that mean "the user asked for something that cannot be done"; the CLI prints them in one line."""

from genie.config import ConfigError
from genie.data import DataError
from genie.recording import DatasetExistsError
from genie.train import RunError
from genie.video import VideoError
from genie.world import ActionError

USER_ERRORS = (ConfigError, DataError, DatasetExistsError, RunError, VideoError, FileNotFoundError, FloatingPointError, ActionError)
