"""Typed configs: dataclasses with working defaults; YAML files and `key=value` overrides only change them.

A stage config file looks like::

    run_dir: runs/sprites/tokenizer
    data: {dir: data/sprites, seq_len: 8, resolution: 32}
    model: {dim: 128, depth: 2}
    train: {max_steps: 600, lr: 1.0e-3}

Every field is documented by the string literal under it; `config_help` lists them with their types and
defaults (what `genie train <stage> --help` prints), built by jsonargparse from those docstrings.

`load_config` reads the file and the overrides, converts each value to its field's type (our error messages:
one line naming the key and what it expects), then hands the values to a jsonargparse parser over the
dataclass, which checks them against the annotations, fills in the defaults and builds the nested dataclasses.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
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
    """data: the video folder, clips and loader"""

    dir: str = "data/sprites"
    """dataset folder of videos (and action sidecars)"""
    seq_len: int = 16
    """frames per clip"""
    frame_stride: int = 1
    """take every n-th frame of the video"""
    clip_step: int = 4
    """frames between the starts of consecutive training clips"""
    resolution: Resolution = 64
    """frame size: one number for square frames (64 -> 64x64) or [height, width] (Genie's 160x90 is [90, 160]);
    an override may also say 90x160"""
    fit: str = DEFAULT_FIT
    """how frames of another aspect ratio are fitted to `resolution` (genie/models/resolution.py): "crop" (centre
    crop to the target aspect, then resize), "pad" (resize to fit inside, black bars) or "resize" (squash)"""
    val_fraction: float = 0.1
    """fraction of files held out for validation (at least one file)"""
    batch_size: int = 16
    """clips per training batch"""
    num_workers: int = 2
    """DataLoader worker processes"""
    max_val_clips: int = 256
    """validation uses at most this many clips (evenly spread)"""
    frame_cache: bool = False
    """decode the training videos once into <run_dir>/frame_cache/ (uint8 at `resolution`, H*W*3 bytes a frame on
    disk) and read clips from it instead of decoding video every step (genie/data/frame_cache.py)"""
    seed: int = 0
    """seed of the train/validation file split and the clip order"""

    def __post_init__(self):
        try:
            self.resolution = canonical_resolution(self.resolution, "data.resolution")
            check_fit(self.fit, "data.fit")
        except ValueError as e:
            raise ConfigError(str(e)) from None


@dataclasses.dataclass
class TrainConfig:
    """train: optimiser, schedule, Trainer, logging and checkpoints"""

    max_steps: int = 10_000
    """optimiser steps to train for"""
    lr: float = 3e-4
    """peak learning rate (AdamW), reached after the warmup"""
    min_lr_ratio: float = 0.1
    """the cosine schedule decays to lr * min_lr_ratio"""
    warmup_steps: int = 500
    """steps of linear learning-rate warmup"""
    weight_decay: float = 1e-4
    """AdamW weight decay"""
    beta1: float = 0.9
    """AdamW beta1"""
    beta2: float = 0.9
    """AdamW beta2 (Genie uses 0.9)"""
    grad_clip: float = 1.0
    """gradient norm clipping"""
    precision: str = "auto"
    """Lightning precision; "auto" = bf16-mixed on GPU, 32 on CPU"""
    accelerator: str = "auto"
    """Lightning accelerator: "auto", "cpu", "gpu", ..."""
    devices: Any = "auto"
    """Lightning devices: "auto", a count or a list of device ids"""
    strategy: str = "auto"
    """Lightning strategy: "auto", "ddp", ..."""
    num_nodes: int = 1
    """machines in a multi-node run"""
    val_every_steps: int = 500
    """validate every this many steps"""
    log_every_steps: int = 25
    """log training metrics every this many steps"""
    sample_every_steps: int = 1000
    """sample videos/images are logged this often (at validation)"""
    ckpt_every_steps: int = 500
    """save a checkpoint every this many steps"""
    ckpt_every_minutes: float = 10.0
    """also save last.ckpt every this many minutes of training (0: off)"""
    logger: str = "wandb"
    """where metrics go: "wandb" (offline by default), "csv" or "none" (no logger)"""
    wandb_project: str = "genie"
    """wandb project name"""
    compile: bool = False
    """torch.compile the model for training (checkpoint keys are unchanged)"""
    seed: int = 0
    """seed of model initialisation and training randomness"""


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
        elif isinstance(value, dict):
            raise ConfigError(f"config key '{key}' expects a list, got {value!r}")
        elif not isinstance(value, (list, tuple)):  # one item: `sizes=3` is [3]
            value = [value]
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


def _check_keys(cls: type, values: dict[str, Any], prefix: str) -> None:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key '{prefix}{unknown[0]}' "
            f"(valid keys under '{prefix or '<top>'}': {', '.join(sorted(names))})"
        )


def typed_values(cls: type, values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`values` (a possibly nested dict from YAML and overrides) with every value converted to the type of its
    field of dataclass `cls`, nested dataclass fields kept as dicts; unknown keys and values of the wrong type
    are a one-line ConfigError naming the key."""
    _check_keys(cls, values, prefix)
    hints = typing.get_type_hints(cls)
    out: dict[str, Any] = {}
    for k, v in values.items():
        tp, key = hints[k], prefix + k
        if _is_dataclass_type(tp) and not isinstance(v, tp):
            if not isinstance(v, dict):
                raise ConfigError(f"config key '{key}' must be a mapping, got {v!r}")
            out[k] = typed_values(tp, v, key + ".")
        else:
            out[k] = _coerce(v, tp, key)
    return out


def from_dict(cls: type, values: dict[str, Any], prefix: str = "") -> Any:
    """Build dataclass `cls` from a (possibly nested) dict; unknown keys are an error, not ignored. (Plain
    dataclasses, no jsonargparse: what loading a checkpoint's model config uses; `load_config` is the CLI's.)"""
    _check_keys(cls, values, prefix)
    hints = typing.get_type_hints(cls)
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in values.items()}
    return cls(**kwargs)


# ---------------------------------------------------------------- jsonargparse: the parser over the dataclasses


@functools.cache
def config_parser(cls: type):
    """A jsonargparse parser over run config dataclass `cls`: one `--key.sub` option per field, documented by the
    field's docstring, with its type and default. Nested dataclass fields are groups (data, model, train)."""
    import argparse

    # imported here: the play path imports genie.config (through the model configs) and never parses a config
    from jsonargparse import ArgumentParser, set_parsing_settings
    from jsonargparse._actions import _ActionConfigLoad

    set_parsing_settings(docstring_parse_attribute_docstrings=True)
    parser = ArgumentParser(prog="genie", usage=argparse.SUPPRESS, add_help=False, exit_on_error=False)
    parser.add_class_arguments(cls, as_group=True)
    for action in parser._actions:  # `--data FILE` (a group loaded from its own file): not offered, never shown
        if isinstance(action, _ActionConfigLoad):
            action.help = argparse.SUPPRESS
    return parser


def config_help(cls: type) -> str:
    """Every field of run config `cls`, by section, with its docstring, type and default."""
    return config_parser(cls).format_help().strip("\n") + "\n"


_USER_SET: contextvars.ContextVar[frozenset[str] | None] = contextvars.ContextVar("genie_user_set", default=None)


@contextlib.contextmanager
def _user_set(keys: frozenset[str]):
    token = _USER_SET.set(keys)
    try:
        yield
    finally:
        _USER_SET.reset(token)


def _dotted_keys(values: dict[str, Any], prefix: str = "") -> set[str]:
    keys = set()
    for k, v in values.items():
        keys.add(prefix + k)
        if isinstance(v, dict):
            keys |= _dotted_keys(v, prefix + k + ".")
    return keys


def user_set(obj: Any, name: str, key: str) -> bool:
    """Whether the user set field `name` of config `obj` (dotted `key`, e.g. "model.max_frames"). While
    `build_config` builds a config it knows which keys the file and the overrides named; a config built
    directly in Python is judged by its value: set when it differs from the dataclass default."""
    keys = _USER_SET.get()
    if keys is not None:
        return key in keys
    default = {f.name: f.default for f in dataclasses.fields(obj)}[name]
    return getattr(obj, name) != default


def build_config(cls: type, values: dict[str, Any]) -> Any:
    """Run config `cls` from `values` (nested dict, as YAML and overrides give): converted to the field types
    (`typed_values`), then parsed by jsonargparse over `cls` (types checked, defaults filled in, nested dataclasses
    built), then `cls` itself, whose checks see which keys the user set (`user_set`). Errors are one-line
    ConfigErrors."""
    from jsonargparse import ArgumentError

    typed = typed_values(cls, values)
    parser = config_parser(cls)
    with _user_set(frozenset(_dotted_keys(values))):
        try:
            namespace = parser.instantiate(parser.parse_object(typed))
        except ArgumentError as e:  # ours caught every mistake we know of; this keeps anything else to one line
            raise ConfigError(" ".join(str(e).split())) from None
        return cls(**{f.name: namespace[f.name] for f in dataclasses.fields(cls)})


def follow_data(model: Any, name: str, value: Any, source: str, same: Any = None) -> None:
    """Set field `name` of model config `model` to `value`, which the run config derives from `source` (a data
    field, e.g. model.resolution from data.resolution, or a trained model's, e.g. the dynamics model's num_codes
    from the tokenizer's), unless the user set the field to something else.

    A field the user left out is derived; one already equal to `value` (by `same(a, b)`, default ==) is kept;
    any other is refused with a one-line ConfigError naming both fields, never overwritten. (Whether the user
    set it: see `user_set`.)"""
    current = getattr(model, name)
    if (same or (lambda a, b: a == b))(current, value) or not user_set(model, name, f"model.{name}"):
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
    """Defaults of `cls`, updated by the YAML file at `path`, then by `key=value` overrides (`build_config`)."""
    values: dict[str, Any] = load_yaml(path) if path else {}
    values = deep_merge(values, parse_overrides(overrides or []))
    return build_config(cls, values)


def dump_config(cfg: Any) -> str:
    """Config dataclass `cfg` as YAML, fields in declaration order (readable by load_config)."""
    return yaml.safe_dump(to_dict(cfg), sort_keys=False)


def save_config(cfg: Any, path: str | Path) -> None:
    """Write config dataclass `cfg` to `path` as YAML, fields in declaration order (readable by load_config)."""
    Path(path).write_text(dump_config(cfg))
