"""What every stage shares when it trains: run folders, the Trainer, AdamW with warmup + cosine,
sample logging and loading a finished stage's weights.

A run folder holds `config.yaml` (the resolved config), `checkpoints/` (`last.ckpt` plus periodic
ones), `samples/` (real vs generated images) and the logger's files. Starting a stage on a folder
with a `last.ckpt` resumes it; `overwrite=True` deletes the folder first; a folder whose saved model
config differs is refused rather than silently mixed.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import os
import pickle
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, ThroughputMonitor, TQDMProgressBar

from genie.config import TrainConfig, to_dict
from genie.data.ranks import is_launch_rank_zero
from genie.data.video import write_gif, write_image
from genie.models.checkpoint import RunError, load_checkpoint, refused, stage_of

log = logging.getLogger(__name__)


def prepare_run_dir(run_dir: str | Path, config: Any, overwrite: bool = False) -> Path | None:
    """Create or reuse `run_dir` and save the resolved config; returns the checkpoint to resume from."""
    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.ckpt"
    saved = run_dir / "config.yaml"
    new = to_dict(config)
    if run_dir.exists() and overwrite and is_launch_rank_zero():  # the other ranks must not delete what rank 0 made
        shutil.rmtree(run_dir)
    elif last.is_file() and saved.is_file():
        old_model = (yaml.safe_load(saved.read_text()) or {}).get("model") or {}
        # compared as YAML reads them back (a tuple such as a rectangular resolution is saved as a list)
        if old_model != (yaml.safe_load(yaml.safe_dump(new.get("model"))) or {}):
            raise RunError(
                f"{run_dir} holds a run with a different model config; pass --overwrite to replace it "
                f"or set run_dir to a new folder"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    saved.write_text(yaml.safe_dump(new, sort_keys=False))
    return last if last.is_file() else None


# ------------------------------------------------------------------------------------------ trainer


class StageModule(L.LightningModule):
    """What the three stage modules share: the run config and its hyperparameters (the stage name and the whole
    config, what a checkpoint is loaded by), the trained `self.model` and its AdamW schedule, the data module, and
    one cadence for samples. A subclass sets `stage`, builds `self.model` after `super().__init__(cfg)`, and may
    override `make_datamodule`."""

    stage = ""

    def __init__(self, cfg: Any):
        super().__init__()
        self.cfg = cfg
        self.save_hyperparameters({"stage": self.stage, "config": to_dict(cfg)})
        self.samples = SampleLogger(self)
        self._sampled_at = -1  # the last sample_every_steps period a sample was logged in

    @staticmethod
    def make_datamodule(cfg: Any):
        """The video clips of `cfg.data`, with the frame cache under `cfg.run_dir` when configured."""
        from genie.data.datamodule import VideoDataModule

        return VideoDataModule(cfg.data, run_dir=cfg.run_dir)

    def configure_optimizers(self):
        """AdamW with warmup and cosine decay over the trained model's parameters (`configure_adamw`)."""
        return configure_adamw(self.model, self.cfg.train)

    def sample_due(self, batch_idx: int) -> bool:
        """True at the first validation batch of each `train.sample_every_steps` period of steps (0: never);
        marks the period as sampled."""
        every = self.cfg.train.sample_every_steps
        if batch_idx != 0 or every <= 0 or self.global_step // every == self._sampled_at:
            return False
        self._sampled_at = self.global_step // every
        return True


def _clips(batch) -> torch.Tensor:
    """The clips of a batch: a stage's video (B, T, ...) or token-cache ids (B, T, S), else its first tensor."""
    if isinstance(batch, dict):
        return batch["video"] if "video" in batch else batch["ids"]
    return batch[0] if isinstance(batch, (list, tuple)) else batch


def clips_in(batch) -> int:
    """Clips in a training batch: what Lightning's ThroughputMonitor counts as samples."""
    return int(_clips(batch).shape[0])


def frames_in(batch) -> int:
    """Frames in a training batch: what Lightning's ThroughputMonitor counts as items."""
    clips = _clips(batch)
    return int(clips.shape[0] * (clips.shape[1] if clips.ndim > 1 else 1))


class SampleLogger:
    """Saves sample grids/videos under run_dir/samples and forwards them to wandb when it is the logger."""

    def __init__(self, module: L.LightningModule):
        self.module = module

    def __call__(self, name: str, frames: np.ndarray, fps: int = 5) -> None:
        """frames: uint8 image (H, W, 3) or video (T, H, W, 3)."""
        trainer = self.module.trainer
        if trainer is None or not trainer.is_global_zero or trainer.sanity_checking:
            return
        out = Path(trainer.default_root_dir) / "samples"
        out.mkdir(parents=True, exist_ok=True)
        step = trainer.global_step
        path = out / f"{name}_{step:07d}.{'png' if frames.ndim == 3 else 'gif'}"
        if frames.ndim == 3:
            write_image(path, frames)
        else:
            write_gif(path, frames, fps)
        for logger in trainer.loggers:
            if type(logger).__name__ == "WandbLogger":
                import wandb

                item = wandb.Image(str(path)) if frames.ndim == 3 else wandb.Video(str(path), format="gif")
                logger.experiment.log({f"samples/{name}": item, "trainer/global_step": step})


def configure_adamw(module: torch.nn.Module, cfg: TrainConfig):
    """AdamW (fused on CUDA) without decay on norms, biases and embeddings; linear warmup then cosine decay."""
    decay, no_decay = [], []
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        (no_decay if param.ndim < 2 or "pos_" in name or "embed" in name.split(".")[-2:][0] else decay).append(param)
    fused = torch.cuda.is_available() and all(p.is_cuda for p in decay + no_decay)
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(cfg.beta1, cfg.beta2),
        fused=fused or None,
    )

    def schedule(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / max(1, cfg.warmup_steps)
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class FinalCheckpoint(Callback):
    """Writes last.ckpt when training ends normally.

    Step checkpoints fire every `ckpt_every_steps`; when `max_steps` is not a multiple of it, the last
    saved step would be short of `max_steps`, and running the command again would train the stage
    once more instead of skipping it. Not called on an exception (NaN loss, kill): last.ckpt stays the
    last good one.
    """

    def on_train_end(self, trainer, pl_module) -> None:
        """Save checkpoints/last.ckpt when training ends, whatever the checkpoint intervals."""
        trainer.save_checkpoint(Path(trainer.default_root_dir) / "checkpoints" / "last.ckpt")


class NaNGuard(Callback):
    """Stops training with a clear message when the loss is not finite, and never checkpoints after it.

    Reading the loss on the host at every step would stall the GPU (a device-to-host sync a step), so the
    first bad step is recorded on the device and read every `check_every` steps (when the progress bar
    reads the loss anyway) and before every checkpoint is written: a run stops within `check_every` steps
    of a non-finite loss, and no checkpoint holds weights it touched; the last one on disk stays good.
    """

    def __init__(self, check_every: int = 10):
        self.check_every = check_every
        self._first_bad: torch.Tensor | None = None  # the first step whose loss was not finite, -1 while none

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        """Note, on the device (no host read), the first step whose loss is not finite."""
        bad = ~torch.isfinite(loss.detach()).all()
        if self._first_bad is None:
            self._first_bad = torch.full((), -1, dtype=torch.long, device=loss.device)
        self._first_bad = torch.where(bad & (self._first_bad < 0), trainer.global_step, self._first_bad)

    def check(self, trainer) -> None:
        """Raise if any process has seen a non-finite loss (every process calls this at the same points)."""
        step = -1 if self._first_bad is None else int(self._first_bad)
        # under DDP one rank's bad loss reaches every rank's weights through the gradient all-reduce
        if trainer.strategy.reduce_boolean_decision(step >= 0, all=False):
            where = f"at step {step}" if step >= 0 else "in another process"
            raise FloatingPointError(
                f"loss became nan or inf {where}; training stopped, the last good checkpoint "
                f"is in {Path(trainer.default_root_dir) / 'checkpoints'} (lower train.lr or raise train.warmup_steps)"
            )

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        """Check for a non-finite loss every `check_every` steps."""
        if trainer.global_step % self.check_every == 0:
            self.check(trainer)

    def on_validation_start(self, trainer, pl_module) -> None:
        """Check for a non-finite loss before validation."""
        self.check(trainer)  # validation rollouts would sample from nan probabilities

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        """Check for a non-finite loss before a checkpoint is written."""
        # before the file is written; Lightning calls this only for full checkpoints (not save_weights_only),
        # which are the only kind this project writes
        self.check(trainer)


def _logger(cfg: TrainConfig, run_dir: Path, name: str):
    if cfg.logger == "none":
        return False
    if cfg.logger == "wandb":
        try:
            import wandb  # noqa: F401
            from lightning.pytorch.loggers import WandbLogger

            os.environ.setdefault("WANDB_MODE", "offline")  # no account or network needed; `wandb sync` later
            os.environ.setdefault("WANDB_SILENT", "true")
            return WandbLogger(project=cfg.wandb_project, name=name, save_dir=str(run_dir), log_model=False)
        except ImportError:
            log.warning("wandb is not installed: logging to CSV in %s", run_dir)
    from lightning.pytorch.loggers import CSVLogger

    return CSVLogger(save_dir=str(run_dir), name="logs")


def precision_for(cfg: TrainConfig) -> str:
    """The Lightning precision string for `cfg`: cfg.precision unless "auto", which is "bf16-mixed" on a GPU that
    supports bfloat16 and "32-true" otherwise."""
    if cfg.precision != "auto":
        return cfg.precision
    use_gpu = cfg.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    return "bf16-mixed" if use_gpu and torch.cuda.is_bf16_supported() else "32-true"


def make_trainer(
    cfg: TrainConfig, run_dir: str | Path, name: str, extra_callbacks: list | None = None, progress: bool = True
) -> L.Trainer:
    """The Lightning Trainer of a stage: checkpoints under `run_dir`/checkpoints every cfg.ckpt_every_steps
    steps (and cfg.ckpt_every_minutes), always refreshing last.ckpt, a final checkpoint, the NaN guard, the
    logger named `name`, `extra_callbacks`, and a progress bar when `progress`."""
    run_dir = Path(run_dir)
    ckpt_dir = run_dir / "checkpoints"
    callbacks = [
        # periodic checkpoints by steps, always refreshing last.ckpt
        ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="step{step:07d}",
            auto_insert_metric_name=False,
            every_n_train_steps=cfg.ckpt_every_steps,
            save_top_k=-1,
            save_last=True,
            enable_version_counter=False,
        ),
        NaNGuard(),
        # Lightning's throughput over the last log_every_steps steps: train/device/items_per_sec is frames a second
        ThroughputMonitor(batch_size_fn=clips_in, length_fn=frames_in, window_size=max(2, cfg.log_every_steps)),
        *(extra_callbacks or []),
        FinalCheckpoint(),
    ]
    if cfg.ckpt_every_minutes > 0:
        # and by wall-clock time, so a long run killed between step checkpoints loses little; both callbacks
        # refresh the same last.ckpt (no version counter, no "last-v1.ckpt"): the file a resumed run starts from
        callbacks.append(
            ModelCheckpoint(
                dirpath=ckpt_dir,
                filename="latest-time",
                save_top_k=1,
                save_last=True,
                enable_version_counter=False,
                train_time_interval=timedelta(minutes=cfg.ckpt_every_minutes),
            )
        )
    if progress:
        callbacks.append(TQDMProgressBar(refresh_rate=10))
    return L.Trainer(
        default_root_dir=str(run_dir),
        max_steps=cfg.max_steps,
        max_epochs=-1,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        num_nodes=cfg.num_nodes,
        precision=precision_for(cfg),
        gradient_clip_val=cfg.grad_clip or None,
        val_check_interval=cfg.val_every_steps,
        check_val_every_n_epoch=None,
        log_every_n_steps=cfg.log_every_steps,
        logger=_logger(cfg, run_dir, name),
        callbacks=callbacks,
        enable_progress_bar=progress,
        enable_model_summary=progress,
        num_sanity_val_steps=0,
        use_distributed_sampler=False,  # the data module's ClipStream shards by rank itself
    )


def fit(
    module: L.LightningModule,
    datamodule: L.LightningDataModule,
    cfg: TrainConfig,
    run_dir: str | Path,
    resume: Path | None,
    name: str,
    progress: bool = True,
) -> L.Trainer:
    """Train `module`, resuming from `resume` when given; returns the trainer."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if cfg.compile:
        # the task's model, in place: its calls from training_step (and the dynamics loss's own call) run
        # compiled, while logging, sampling and validation rollouts stay eager; checkpoint keys are unchanged
        module.model.compile()
    if resume is not None:
        check_resumable(resume, getattr(module, "stage", None))
    trainer = make_trainer(cfg, run_dir, name, progress=progress)
    if resume is not None:
        log.warning("resuming %s from %s", name, resume)
    # weights-only here too: Lightning's own resume load would default to unpickling anything (Lightning
    # before 2.6 has no such argument: there the check above, weights-only, has vetted the file)
    weights_only = {"weights_only": True} if "weights_only" in inspect.signature(trainer.fit).parameters else {}
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(resume) if resume else None, **weights_only)
    except pickle.UnpicklingError as e:  # the file changed after the check above
        raise refused(resume, e) from None
    return trainer


# -------------------------------------------------------------------------------------- checkpoints


def check_resumable(path: str | Path, stage: str | None = None) -> dict:
    """The checkpoint a run resumes from, loaded weights-only and checked to be a Lightning checkpoint of
    `stage`: a tampered or foreign file is a one-line RunError before Lightning reads it."""
    ckpt = load_checkpoint(path)
    found = stage_of(ckpt) if isinstance(ckpt, dict) else None
    if (
        not isinstance(ckpt, dict)
        or "state_dict" not in ckpt
        or "global_step" not in ckpt
        or (stage and found != stage)
    ):
        kind = f"a {found} checkpoint" if found else "not a genie training checkpoint"
        raise RunError(
            f"{path}: cannot resume from it: {kind}, expected a {stage or 'Lightning'} checkpoint; "
            f"remove it or pass --overwrite to start the run over"
        )
    return ckpt


def train_stage(task_cls: type, cfg: Any, overwrite: bool = False, progress: bool = True) -> Path:
    """Train one stage from its RunConfig (run_dir, data, model, train); resumes or skips a finished run."""
    resume = prepare_run_dir(cfg.run_dir, cfg, overwrite)
    if resume is not None and int(check_resumable(resume, task_cls.stage)["global_step"]) >= cfg.train.max_steps:
        log.warning("%s already trained to %d steps: %s", task_cls.stage, cfg.train.max_steps, resume)
        return Path(cfg.run_dir)
    if resume is not None and getattr(cfg, "init", None):
        cfg = dataclasses.replace(cfg, init=None)  # the checkpoint holds the weights: `init` is for the first start
    datamodule = task_cls.make_datamodule(cfg)
    # seeded before the model is built: its initial weights are part of the run (fit seeds again for training)
    L.seed_everything(cfg.train.seed, workers=True, verbose=False)
    fit(task_cls(cfg), datamodule, cfg.train, cfg.run_dir, resume, name=task_cls.stage, progress=progress)
    return Path(cfg.run_dir)
