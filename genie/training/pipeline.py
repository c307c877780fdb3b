"""`genie train all`: tokenizer, then LAM, then dynamics, each resuming or skipped when already done,
ending in one world-model bundle at `<run_dir>/world_model.pt`.

configs/<dataset>/genie.yaml names the three stage configs; the pipeline puts each stage in
`<run_dir>/<stage>`, points every stage at the same data folder, and hands the first two
checkpoints to the dynamics stage. Overrides are routed by prefix: `tokenizer.train.max_steps=10`.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path

from genie.config import ConfigError, build_config, deep_merge, load_yaml, parse_overrides
from genie.data.datamodule import VideoDataModule
from genie.data.heldout import training_record
from genie.data.labels import action_meta
from genie.models.checkpoint import dataclass_from, expect_stage, load_checkpoint, model_state
from genie.models.dynamics import DynamicsConfig, DynamicsModel
from genie.models.lam import load_lam
from genie.models.tokenizer import load_tokenizer
from genie.models.world import WorldModel
from genie.training.dynamics_stage import DynamicsModule, DynamicsRunConfig
from genie.training.lam_stage import LAMModule, LAMRunConfig
from genie.training.tokenizer_stage import TokenizerModule, TokenizerRunConfig
from genie.training.trainer import is_launch_rank_zero, train_stage

log = logging.getLogger(__name__)

# each stage's run config and LightningModule, in training order
STAGES: dict[str, tuple[type, type]] = {
    "tokenizer": (TokenizerRunConfig, TokenizerModule),
    "lam": (LAMRunConfig, LAMModule),
    "dynamics": (DynamicsRunConfig, DynamicsModule),
}


@dataclass
class PipelineConfig:
    """genie train all: the three stage configs and where the run goes"""

    run_dir: str = "runs/genie"
    """run folder: one sub-folder per stage and world_model.pt"""
    data_dir: str | None = None
    """when set, every stage reads this dataset folder"""
    tokenizer: str = "configs/sprites/tokenizer.yaml"
    """the tokenizer stage's config file (relative paths may be relative to this file)"""
    lam: str = "configs/sprites/lam.yaml"
    """the LAM stage's config file"""
    dynamics: str = "configs/sprites/dynamics.yaml"
    """the dynamics stage's config file"""
    prompt_frames: int = 4
    """frames of a validation clip stored in the bundle as its sample prompt"""


def _stage_file(value: str, config_path: Path) -> Path:
    path = Path(value)
    if not path.is_absolute() and not path.exists() and (config_path.parent / path).exists():
        path = config_path.parent / path
    return path


def stage_configs(config_path: str | Path, overrides: list[str] | None = None) -> tuple[PipelineConfig, dict]:
    """The pipeline config and each stage's resolved RunConfig."""
    config_path = Path(config_path)
    nested = parse_overrides(overrides or [])
    stage_overrides = {s: nested.pop(s) for s in STAGES if isinstance(nested.get(s), dict)}
    # `data.dir=...` (what `--data` produces) and unprefixed `train.*` (e.g. train.seed, train.accelerator) apply to
    # every stage; a stage's prefix wins over them
    shared = {key: nested.pop(key) for key in ("data", "train") if isinstance(nested.get(key), dict)}
    pipeline = build_config(PipelineConfig, deep_merge(load_yaml(config_path), nested))
    configs = {}
    for stage in STAGES:
        run_config_cls, _ = STAGES[stage]
        values = load_yaml(_stage_file(getattr(pipeline, stage), config_path))
        values["run_dir"] = str(Path(pipeline.run_dir) / stage)
        if pipeline.data_dir:
            values = deep_merge(values, {"data": {"dir": pipeline.data_dir}})
        if shared:
            values = deep_merge(values, shared)
        if stage == "dynamics":
            values["tokenizer"] = str(Path(pipeline.run_dir) / "tokenizer")
            values["lam"] = str(Path(pipeline.run_dir) / "lam")
        values = deep_merge(values, stage_overrides.get(stage, {}))
        try:
            configs[stage] = build_config(run_config_cls, values)
        except ConfigError as e:
            raise ConfigError(f"{stage} stage: {e}") from None
    return pipeline, configs


def train_all(
    config_path: str | Path, overrides: list[str] | None = None, overwrite: bool = False, progress: bool = True
) -> Path:
    """Train the three stages in order and write the bundle; returns its path."""
    pipeline, configs = stage_configs(config_path, overrides)
    if overwrite and Path(pipeline.run_dir).exists() and is_launch_rank_zero():
        shutil.rmtree(pipeline.run_dir)
    for stage in STAGES:
        log.warning("=== stage %s -> %s", stage, configs[stage].run_dir)
        train_stage(STAGES[stage][1], configs[stage], progress=progress)
    return export_bundle(configs["dynamics"], Path(pipeline.run_dir) / "world_model.pt", pipeline.prompt_frames)


def export_bundle(dynamics_cfg, out: str | Path, prompt_frames: int = 4) -> Path:
    """Write the bundle from the finished dynamics run (its checkpoint holds the frozen tokenizer and LAM too) and
    return its path. In a multi-process launch only the launch's rank zero writes it (every rank of a DDP run
    returns here after training; Lightning saved the checkpoint on global rank zero only); the others return the
    path at once. Raises RunError when the run has no checkpoint."""
    if not is_launch_rank_zero():
        return Path(out)
    ckpt = load_checkpoint(dynamics_cfg.run_dir)
    config = expect_stage(ckpt, "dynamics", dynamics_cfg.run_dir)
    dynamics = DynamicsModel(dataclass_from(DynamicsConfig, config["model"]))
    dynamics.load_state_dict(model_state(ckpt))
    tokenizer, lam = load_tokenizer(dynamics_cfg.tokenizer), load_lam(dynamics_cfg.lam)
    tokenizer.load_state_dict(model_state(ckpt, "tokenizer."))
    lam.load_state_dict(model_state(ckpt, "lam."))
    datamodule = VideoDataModule(dynamics_cfg.data)
    datamodule.setup()
    prompt = datamodule.val_set[0]["video"][:prompt_frames].numpy()
    meta = {"training": training_record(dynamics_cfg.data)}
    # with true-action sidecars: the game's action names and what each latent code means, from a few training episodes
    if datamodule.manifest is not None:  # packed: the action map reads the source videos when they are still here
        from dataclasses import replace

        from genie.data.packed import source_training_videos

        videos = source_training_videos(datamodule.manifest)
        action_cfg = replace(dynamics_cfg.data, dir=datamodule.manifest["source"])
    else:
        videos, action_cfg = datamodule.train_set.videos, dynamics_cfg.data
    meta.update(action_meta(lam, videos, action_cfg) if videos else {})
    data = dynamics_cfg.data
    return WorldModel(
        tokenizer, lam, dynamics, prompt=prompt, meta=meta, fit=data.fit, frame_stride=data.frame_stride
    ).save(out)
