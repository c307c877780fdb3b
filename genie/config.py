"""Typed configs: dataclasses with working defaults; YAML files and `key=value` overrides only change them.

A stage config file looks like::

    run_dir: runs/sprites/tokenizer
    data: {dir: data/sprites, seq_len: 8, resolution: 32}
    model: {dim: 128, depth: 2}
    train: {max_steps: 600, lr: 1.0e-3}
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from genie.models.resolution import DEFAULT_FIT, Resolution, canonical_resolution, check_fit


class ConfigError(ValueError):
    """A config file or override that cannot be applied; the message names the key and the fix."""


@dataclasses.dataclass
class DataConfig:
    dir: str = "data/sprites"
    seq_len: int = 16  # frames per clip
    frame_stride: int = 1  # take every n-th frame of the video
    clip_step: int = 4  # frames between the starts of consecutive training clips
    # frame size: one number for square frames (64 -> 64x64) or [height, width] (Genie's 160x90 is [90, 160]);
    # an override may also say 90x160
    resolution: Resolution = 64
    # how frames of another aspect ratio are fitted to `resolution` (genie/models/resolution.py): "crop" (centre crop
    # to the target aspect, then resize), "pad" (resize to fit inside, black bars) or "resize" (squash)
    fit: str = DEFAULT_FIT
    val_fraction: float = 0.1  # fraction of files held out for validation (at least one file)
    batch_size: int = 16
    num_workers: int = 2
    max_val_clips: int = 256  # validation uses at most this many clips (evenly spread)
    # decode the training videos once into <run_dir>/frame_cache/ (uint8 at `resolution`, H*W*3 bytes a
    # frame on disk) and read clips from it instead of decoding video every step (genie/data/frame_cache.py)
    frame_cache: bool = False
    seed: int = 0

    def __post_init__(self):
        try:
            self.resolution = canonical_resolution(self.resolution, "data.resolution")
            check_fit(self.fit, "data.fit")
        except ValueError as e:
            raise ConfigError(str(e)) from None


@dataclasses.dataclass
class TrainConfig:
    max_steps: int = 10_000
    lr: float = 3e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 500
    weight_decay: float = 1e-4
    beta1: float = 0.9
    beta2: float = 0.9  # Genie uses beta2 = 0.9
    grad_clip: float = 1.0
    precision: str = "auto"  # "auto" = bf16-mixed on GPU, 32 on CPU
    accelerator: str = "auto"
    devices: Any = "auto"
    strategy: str = "auto"
    num_nodes: int = 1
    val_every_steps: int = 500
    log_every_steps: int = 25
    sample_every_steps: int = 1000  # sample videos/images logged this often (at validation)
    ckpt_every_steps: int = 500
    ckpt_every_minutes: float = 10.0
    logger: str = "wandb"  # "wandb" (offline by default), "csv" or "none"
    wandb_project: str = "genie"
    compile: bool = False
    seed: int = 0


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the annotated field type, with a clear error."""
    if isinstance(tp, str):
        raise ConfigError(f"internal: unresolved annotation for {key}")
    origin = typing.get_origin(tp)
    if tp is Any or tp is None:
        return value
    if tp == Resolution:  # a frame size: 64, [90, 160] or "90x160"
        try:
            return canonical_resolution(value, key)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _coerce(value, args[0], key)
    if origin in (list, tuple):
        (arg,) = typing.get_args(tp)[:1] or (Any,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v != ""]
        return origin(_coerce(v, arg, key) for v in value)
    if _is_dataclass_type(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {value!r}")
        return from_dict(tp, value, prefix=key + ".")
    if tp is bool:
        if isinstance(value, str):
            low = value.lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ConfigError(f"config key '{key}' expects true/false, got {value!r}")
        return bool(value)
    if tp in (int, float, str):
        try:
            if tp is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return tp(float(value)) if tp is int and isinstance(value, str) and "e" in value.lower() else tp(value)
        except (TypeError, ValueError):
            raise ConfigError(f"config key '{key}' expects {tp.__name__}, got {value!r}") from None
    return value


def from_dict(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a (possibly nested) dict; unknown keys are an error, not ignored."""
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}' "
            f"(valid keys under '{prefix or '<top>'}': {', '.join(sorted(names))})"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in values.items()}
    return cls(**kwargs)


def follow_data(model: Any, name: str, value: Any, source: str, same: Any = None) -> None:
    """Set field `name` of model config `model` to `value`, which the run config derives from data field
    `source` (e.g. model.resolution from data.resolution), unless the user set the field to something else.

    A field left at its dataclass default is derived; one already equal to `value` (by `same(a, b)`, default
    ==) is kept; any other is refused with a one-line ConfigError naming both fields, never overwritten. (A
    value the user set equal to the default cannot be told from the default, and is derived.)"""
    defaults = {f.name: f.default for f in dataclasses.fields(model)}
    current = getattr(model, name)
    if current == defaults[name] or (same or (lambda a, b: a == b))(current, value):
        setattr(model, name, value)
        return
    raise ConfigError(
        f"model.{name} is {current} but {source} is {value}: the model follows {source}, "
        f"so leave model.{name} out (or set it to {value})"
    )


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass (nested) -> plain dict of its fields, as saved in config.yaml and checkpoints."""
    return dataclasses.asdict(cfg)


def parse_overrides(overrides: list[str]) -> dict[str, Any]:
    """Turn ['train.lr=1e-3', 'model.dim=64'] into a nested dict; values are parsed as YAML scalars."""
    nested: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value (e.g. train.max_steps=100)")
        key, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        node = nested
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{item}' conflicts with another override of '{part}'")
        node[parts[-1]] = value
    return nested


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`base` updated by `update`, recursing into mappings present in both; neither input is modified."""
    out = dict(base)
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """The mapping in the YAML file at `path` ({} for an empty file). Raises ConfigError when the file is missing,
    is not valid YAML, or does not hold a mapping at the top level."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} not found (see configs/ for examples)")
    try:
        values = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"config file {path} is not valid YAML: {e}") from None
    if not isinstance(values, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return values


def load_config(cls: type, path: str | Path | None = None, overrides: list[str] | None = None) -> Any:
    """Defaults of `cls`, updated by the YAML file at `path`, then by `key=value` overrides."""
    values: dict[str, Any] = load_yaml(path) if path else {}
    values = deep_merge(values, parse_overrides(overrides or []))
    return from_dict(cls, values)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write config dataclass `cfg` to `path` as YAML, fields in declaration order (readable by load_config)."""
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
