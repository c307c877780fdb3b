"""genie: turn raw, unlabeled gameplay video into a playable world model."""

__version__ = "0.1.0"
