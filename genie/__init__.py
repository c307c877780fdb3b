"""genie: turn raw, unlabeled gameplay video into a playable world model.

Layers, each importing only those before it: genie.models (torch only; the bundle) <- genie.data <-
genie.training (Lightning) <- the commands (genie.cli, evaluate, rollout, play, ...). docs/layout.md.
"""

__version__ = "0.1.0"

__all__ = ["WorldModel", "load_lam", "load_tokenizer"]

_EXPORTS = {
    "WorldModel": "genie.models.world",
    "load_tokenizer": "genie.models.tokenizer",
    "load_lam": "genie.models.lam",
}


def __getattr__(name: str):
    # lazy (PEP 562): `import genie.config` or `genie data ...` should not pay for importing torch
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'genie' has no attribute {name!r}")
