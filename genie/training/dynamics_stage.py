"""Training the dynamics model on the frozen tokenizer's ids and the frozen LAM's latent actions."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from genie.config import ConfigError, DataConfig, TrainConfig, follow_data
from genie.data.datamodule import VideoDataModule
from genie.data.ranks import local_rank
from genie.data.token_cache import TokenDataModule
from genie.metrics import psnr
from genie.models.checkpoint import load_checkpoint, load_stage_model, load_weights
from genie.models.dynamics import DynamicsConfig, DynamicsModel
from genie.models.lam import LatentActionModel, load_lam
from genie.models.pixels import float_to_video, video_to_float
from genie.models.resolution import format_resolution, frame_size, same_frame_size
from genie.models.sampling import rollout_video
from genie.models.tokenizer import VideoTokenizer, load_tokenizer
from genie.training.trainer import StageModule, precision_for


@dataclass
class DynamicsRunConfig:
    """the dynamics stage"""

    run_dir: str = "runs/dynamics"
    """run folder: checkpoints, config.yaml, logs (an existing one is resumed)"""
    tokenizer: str = "runs/tokenizer"
    """tokenizer checkpoint or run folder"""
    lam: str = "runs/lam"
    """LAM checkpoint or run folder"""
    init: str | None = None
    """dynamics weights to start from (fine-tuning): a dynamics .ckpt, its run folder or a world-model bundle,
    of the same architecture as `model`; null trains from scratch. The optimiser and schedule start afresh; a run
    folder that already has a checkpoint resumes from it instead"""
    data: DataConfig = field(default_factory=DataConfig)
    """data: the video folder, clips and loader"""
    model: DynamicsConfig = field(default_factory=DynamicsConfig)
    """model: the MaskGIT dynamics model"""
    train: TrainConfig = field(default_factory=TrainConfig)
    """train: optimiser, schedule, Trainer, logging and checkpoints"""
    token_cache: bool = True
    """encode every training clip once with the frozen models and train from <run_dir>/token_cache
    (genie/data/token_cache.py); false encodes each batch from video instead"""

    def __post_init__(self) -> None:
        # time positions past the training clip length would never be trained: rollouts slide a window
        # of seq_len frames instead (a different model.max_frames is refused)
        follow_data(self.model, "max_frames", self.data.seq_len, "data.seq_len")


def load_frozen(cfg: DynamicsRunConfig):
    """The trained tokenizer and LAM, frozen, checked against the data resolution."""
    tokenizer, lam = load_tokenizer(cfg.tokenizer), load_lam(cfg.lam)
    for name, model in (("tokenizer", tokenizer), ("lam", lam)):
        if frame_size(model.cfg.resolution) != frame_size(cfg.data.resolution):
            trained, data = format_resolution(model.cfg.resolution), format_resolution(cfg.data.resolution)
            raise ConfigError(
                f"{name} was trained at resolution {trained} but data.resolution is {data}: "
                f"set data.resolution={trained.replace(' ', '')}"
            )
        model.requires_grad_(False).eval()
    return tokenizer, lam


def start_from(model: DynamicsModel, path: str | Path, ckpt: dict | None = None) -> None:
    """Load the dynamics weights of `path` (a dynamics .ckpt, its run folder or a world-model bundle) into `model`
    (fine-tuning). Raises RunError (one line, naming the file) when it holds no dynamics model or its weights do
    not fit, ConfigError naming the options to set when an architecture option differs. Training and sampling
    settings (context_noise, maskgit_steps, temperature, ...) are not weights and stay `model`'s. `ckpt`: the file,
    already loaded."""
    trained = load_stage_model(path, "dynamics", DynamicsConfig, DynamicsModel, label="dynamics model", ckpt=ckpt)
    differ = [
        f"{FOLLOWS.get(name, f'model.{name}')}={getattr(trained.cfg, name)}"
        for name in ARCHITECTURE
        if getattr(trained.cfg, name) != getattr(model.cfg, name)
    ]
    if differ:
        raise ConfigError(f"init {path}: its dynamics model has another architecture; set {' '.join(differ)}")
    load_weights(model, trained.state_dict(), path, "dynamics model")


def check_same_tokenizer(path: str | Path, tokenizer: VideoTokenizer, ckpt: dict | None = None) -> None:
    """Raise ConfigError (one line) when `path` (a world-model bundle, or a dynamics .ckpt or run folder, whose
    state holds the frozen tokenizer under `tokenizer.`) holds other tokenizer weights than `tokenizer`: its
    dynamics model's token ids would mean other image patches. `ckpt`: the file, already loaded."""
    ckpt = load_checkpoint(path) if ckpt is None else ckpt
    if ckpt.get("format") == "genie-bundle":
        theirs = (ckpt.get("tokenizer") or {}).get("state_dict") or {}
    else:
        state = ckpt.get("state_dict") or {}
        theirs = {k.removeprefix("tokenizer."): v for k, v in state.items() if k.startswith("tokenizer.")}
    ours = tokenizer.state_dict()
    if theirs and (set(theirs) != set(ours) or any(not torch.equal(theirs[k], ours[k].cpu()) for k in ours)):
        raise ConfigError(
            f"init {path}: its dynamics model was trained on another tokenizer's ids; set --tokenizer to the "
            "tokenizer it was trained on (or init from a dynamics run trained on this tokenizer)"
        )


# the DynamicsConfig fields that shape the weights (the rest are training or sampling settings)
ARCHITECTURE = (
    "num_codes", "grid", "num_actions", "max_frames", "dim", "depth", "num_heads", "mlp_ratio",
    "tie_embeddings", "prev_frame_input", "prev_frame_kernel",
)  # fmt: skip
# the architecture fields the data, tokenizer and LAM decide (genie.config.follow_data): what to set instead
FOLLOWS = {"max_frames": "data.seq_len", "num_codes": "--tokenizer", "grid": "--tokenizer", "num_actions": "--lam"}


@torch.no_grad()
def tokenize(
    tokenizer: VideoTokenizer, lam: LatentActionModel, video: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """What the dynamics stage trains on, from float video (B, T, 3, H, W) in [0, 1] through the frozen
    tokenizer and LAM (both in eval mode): (token ids (B, T, S) int64 with S = h*w, latent actions
    (B, T-1) int64). The dynamics stage without a token cache and bench's "dynamics+encode" both call it."""
    ids = rearrange(tokenizer.encode(video), "b t h w -> b t (h w)")
    return ids, lam.infer_actions(video)


def dynamics_loss(
    model: DynamicsModel, ids: torch.Tensor, actions: torch.Tensor
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The dynamics stage's training loss, the one training and bench both call: token ids (B, T, S) and
    latent actions (B, T-1), int64 -> (scalar masked-token cross-entropy, {"masked_acc"}: 0-dim tensor), by
    `DynamicsModel.loss`. No host reads (see tests/test_bench.py)."""
    return model.loss(ids, actions)


class DynamicsModule(StageModule):
    stage = "dynamics"

    def __init__(self, cfg: DynamicsRunConfig, tokenizer=None, lam=None):
        if tokenizer is None or lam is None:
            tokenizer, lam = load_frozen(cfg)
        # the dynamics model's vocabulary and grid come from the tokenizer, its actions from the LAM (a model
        # value set against them is refused, not overwritten)
        follow_data(cfg.model, "num_codes", tokenizer.num_codes, "the tokenizer's num_codes")
        follow_data(cfg.model, "grid", tokenizer.grid, "the tokenizer's grid", same=same_frame_size)
        follow_data(cfg.model, "num_actions", lam.cfg.num_actions, "the LAM's num_actions")
        super().__init__(cfg)  # after the model config follows the tokenizer and LAM: the checkpoint holds it
        self.tokenizer, self.lam = tokenizer, lam
        self.model = DynamicsModel(cfg.model)
        if cfg.init:
            ckpt = load_checkpoint(cfg.init)  # read once for both checks and the weights
            check_same_tokenizer(cfg.init, tokenizer, ckpt)
            start_from(self.model, cfg.init, ckpt)

    @staticmethod
    def make_datamodule(cfg: DynamicsRunConfig, progress: bool = True) -> VideoDataModule:
        """The data of the dynamics stage: the video clips of `cfg.data`, or, with `cfg.token_cache`, a
        TokenDataModule whose cache (ids and latent actions of every training clip) is built here by the frozen
        tokenizer and LAM when missing or stale. Raises RunError when those checkpoints cannot be loaded, ConfigError
        when they were trained at another resolution than data.resolution."""
        if not cfg.token_cache:
            return StageModule.make_datamodule(cfg)
        datamodule = TokenDataModule(cfg.data, Path(cfg.run_dir) / "token_cache")
        use_gpu = cfg.train.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
        device = torch.device("cuda", local_rank()) if use_gpu else torch.device("cpu")
        tokenizer, lam = load_frozen(cfg)
        datamodule.build_cache(tokenizer, lam, device, precision_for(cfg.train), progress=progress)
        del tokenizer, lam
        if use_gpu:
            torch.cuda.empty_cache()
        return datamodule

    def train(self, mode: bool = True):
        """Set training mode on the dynamics model only: the frozen tokenizer and LAM stay in eval mode (no
        dropout, no codebook restarts)."""
        # the tokenizer and LAM stay in eval mode: no dropout, no codebook restarts
        super().train(mode)
        self.tokenizer.eval()
        self.lam.eval()
        return self

    @torch.no_grad()
    def tokenize(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Video batch -> (float video (B,T,3,H,W), ids (B,T,S), latent actions (B,T-1))."""
        video = video_to_float(batch["video"])
        return video, *tokenize(self.tokenizer, self.lam, video)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """The loss of one batch (token-cache ids and actions, or video tokenized here): scalar float tensor; logs
        train/loss and train/masked_acc."""
        if "ids" in batch:  # from the token cache
            ids, actions = batch["ids"], batch["latent_actions"]
        else:
            _, ids, actions = self.tokenize(batch)
        loss, stats = dynamics_loss(self.model, ids, actions)
        self.log("train/loss", loss, prog_bar=True)
        self.log("train/masked_acc", stats["masked_acc"])
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Log val/loss and val/masked_acc of a video batch, and on the first batch the rollout metrics."""
        video, ids, actions = self.tokenize(batch)
        loss, stats = dynamics_loss(self.model, ids, actions)
        self.log("val/loss", loss, sync_dist=True)
        self.log("val/masked_acc", stats["masked_acc"], sync_dist=True)
        self.log("val/moving_acc", stats["moving_acc"], sync_dist=True)
        if batch_idx == 0:
            self._rollout_metrics(video, ids, actions)

    def _rollout_metrics(self, video: torch.Tensor, ids: torch.Tensor, actions: torch.Tensor) -> None:
        """Generate frames 2..T from frame 1 with the inferred actions; log PSNR vs the real frames."""
        generator = torch.Generator(device=ids.device).manual_seed(0)
        frames = rollout_video(self.tokenizer, self.model, ids, actions, prompt_len=1, generator=generator)
        per_frame = psnr(frames[:, 1:], video[:, 1:]).mean(0)  # (T-1,)
        self.log("val/rollout_psnr", per_frame.mean(), sync_dist=True)
        for k in (1, 4, 8):
            if k <= len(per_frame):
                self.log(f"val/rollout_psnr@{k}", per_frame[k - 1], sync_dist=True)
        if self.sample_due(0):
            real, fake = float_to_video(video[:4]).numpy(), float_to_video(frames[:4]).numpy()
            self.samples("rollout", np.concatenate([np.concatenate(list(real), 2), np.concatenate(list(fake), 2)], 1))
