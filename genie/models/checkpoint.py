"""Loading what training wrote: weights-only checkpoints, a stage's trained model, and the configs saved with them.

Used by the world-model bundle (genie/models/world.py), `load_tokenizer`/`load_lam`, infer-actions and the
training pipeline; torch only, so loading a bundle never imports Lightning.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
import zipfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from genie.config import from_dict
from genie.models.resolution import DEFAULT_FIT


class RunError(RuntimeError):
    """A run folder or checkpoint that cannot be used as asked; the message says what to do."""


# ---------------------------------------------------------------------------------------------- runs


def load_checkpoint(path: str | Path) -> dict:
    """Load a checkpoint with `weights_only=True` (tensors and plain data only, never pickled code)."""
    path = Path(path)
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise RunError(f"checkpoint {path} not found (train the stage first, or give the run folder or .ckpt file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise refused(path, e) from None


def refused(path: str | Path, error: Exception) -> RunError:
    """A one-line RunError for a checkpoint torch.load(weights_only=True) refused; never PyTorch's advice to
    load it with weights_only=False, which would run whatever code the file carries."""
    text = str(error)
    if not zipfile.is_zipfile(path):  # every checkpoint torch.save wrote since PyTorch 1.6 is a zip archive
        return RunError(
            f"{path}: not a PyTorch checkpoint (damaged, or another kind of file); use a checkpoint genie "
            f"wrote, or start over (--overwrite for a run folder)"
        )
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in text:
        found = re.search(r"GLOBAL ([\w.]+)", text)
        carries = f"pickled code or objects ({found.group(1)})" if found else "pickled objects"
        return RunError(
            f"{path}: refused: it carries {carries}, not only weights (tampered with, or not written by "
            f"genie); only weights-only checkpoints are accepted: use one genie wrote, or start over "
            f"(--overwrite for a run folder)"
        )
    first = text.strip().splitlines()[0][:200] if text.strip() else type(error).__name__
    return RunError(f"{path}: not a loadable genie checkpoint ({first}); only weights-only checkpoints are accepted")


def stage_of(ckpt: dict) -> str | None:
    """The stage name ("tokenizer", "lam", "dynamics") recorded in a loaded checkpoint dict, or None."""
    return (ckpt.get("hyper_parameters") or {}).get("stage") or ckpt.get("stage")


def expect_stage(ckpt: dict, stage: str, path: str | Path) -> dict:
    """The saved config of a checkpoint of `stage`; a clear error for any other kind of file."""
    found = stage_of(ckpt)
    if found != stage:
        raise RunError(f"{path} is a {found or 'non-genie'} checkpoint, expected a {stage} checkpoint")
    return ckpt["hyper_parameters"]["config"]


def model_state(ckpt: dict, prefix: str = "model.") -> dict[str, torch.Tensor]:
    """The `model.*` weights of a Lightning checkpoint, prefix stripped."""
    return {k[len(prefix) :]: v for k, v in ckpt["state_dict"].items() if k.startswith(prefix)}


def dataclass_from(cls: type, values: dict) -> Any:
    """Rebuild a (nested) config dataclass from a checkpoint's plain dict."""
    names = {f.name for f in dataclasses.fields(cls)}
    return from_dict(cls, {k: v for k, v in values.items() if k in names})


def recorded_fit(ckpt: dict) -> str:
    """How the frames a model was trained on were fitted to its resolution (data.fit), from a loaded world-model
    bundle or stage checkpoint (DEFAULT_FIT where none is recorded)."""
    if ckpt.get("format") == "genie-bundle":
        return (ckpt.get("frames") or {}).get("fit", DEFAULT_FIT)
    config = (ckpt.get("hyper_parameters") or {}).get("config") or {}
    return (config.get("data") or {}).get("fit", DEFAULT_FIT)


def recorded_stride(ckpt: dict) -> int:
    """Video frames a step of the model spans (data.frame_stride of its training data), from a loaded world-model
    bundle or stage checkpoint; 1 where none is recorded."""
    if ckpt.get("format") == "genie-bundle":
        return int((ckpt.get("frames") or {}).get("stride", 1))
    config = (ckpt.get("hyper_parameters") or {}).get("config") or {}
    return int((config.get("data") or {}).get("frame_stride", 1))


def load_stage_model(
    path: str | Path, stage: str, config_cls: type, model_cls: type, label: str | None = None, ckpt: dict | None = None
):
    """A trained model of `stage`, in eval mode on the CPU, from a .ckpt of that stage, its run folder (its
    checkpoints/last.ckpt) or a world-model bundle (`ckpt`: that file, already loaded); a one-line RunError for
    anything else."""
    label = label or stage
    ckpt = load_checkpoint(path) if ckpt is None else ckpt
    if ckpt.get("format") == "genie-bundle":
        if not isinstance(ckpt.get(stage), dict):
            raise RunError(f"{path}: world-model bundle without a {label}")
        config, state = ckpt[stage]["config"], ckpt[stage]["state_dict"]
    else:
        config, state = expect_stage(ckpt, stage, path)["model"], model_state(ckpt)
    model = model_cls(dataclass_from(config_cls, config))
    load_weights(model, state, path, label)
    return model.eval()


def load_weights(model: nn.Module, state: dict, path: str | Path, label: str) -> None:
    """`model.load_state_dict(state)`, strict; a one-line RunError naming `path` and the first mismatched key
    when the weights do not fit the model (another config, or a file written before a weight was renamed)."""
    try:
        model.load_state_dict(state)
    except RuntimeError:
        expected, given = set(model.state_dict()), set(state)
        missing, unexpected = sorted(expected - given), sorted(given - expected)
        what = (
            f"missing {missing[0]!r}" + (f", unexpected {unexpected[0]!r}" if unexpected else "")
            if missing or unexpected
            else "tensor shapes differ"
        )
        raise RunError(
            f"{path}: its {label} weights do not fit this version's {label} ({what}; "
            f"{len(missing)} missing, {len(unexpected)} unexpected); retrain it, or use the genie version that wrote it"
        ) from None
