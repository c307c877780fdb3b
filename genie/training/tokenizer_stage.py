"""Training the video tokenizer: reconstruction (MSE, optionally + L1) plus the VQ loss.

Training logs `train/loss`, `train/mse` and `train/vq_loss` (and every stage Lightning's ThroughputMonitor:
`train/device/items_per_sec` is frames a second); validation logs `val/recon_psnr`,
`val/recon_ssim`, `val/codebook_usage` and `val/codebook_perplexity` (over all val ids of the epoch) and, every
`train.sample_every_steps`, real | reconstructed samples. (Every stage logs under `train/` and `val/`; `genie eval`'s
metrics.json keeps its own, unprefixed names.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from einops import rearrange

from genie.config import ConfigError, DataConfig, TrainConfig, follow_data, user_set
from genie.data.video import contact_sheet
from genie.metrics import code_count_stats, psnr, ssim
from genie.models.pixels import float_to_video, video_to_float
from genie.models.resolution import patch_fix, patch_grid, same_frame_size
from genie.models.tokenizer import TokenizerConfig, VideoTokenizer
from genie.training.trainer import StageModule

SAMPLE_CLIPS = 4


@dataclass
class TokenizerRunConfig:
    """the tokenizer stage"""

    run_dir: str = "runs/tokenizer"
    """run folder: checkpoints, config.yaml, logs (an existing one is resumed)"""
    data: DataConfig = field(default_factory=DataConfig)
    """data: the video folder, clips and loader"""
    model: TokenizerConfig = field(default_factory=TokenizerConfig)
    """model: the video tokenizer (ST-ViViT VQ-VAE)"""
    train: TrainConfig = field(default_factory=TrainConfig)
    """train: optimiser, schedule, Trainer, logging and checkpoints"""
    l1_weight: float = 0.0
    """weight of an added L1 reconstruction loss (0: MSE only, which is what PSNR measures)"""

    def __post_init__(self):
        # the data decides the frame size; the model follows (a different model.resolution is refused)
        follow_data(self.model, "resolution", self.data.resolution, "data.resolution", same=same_frame_size)
        # a training clip goes through in one pass: max_frames is at least the clip length
        if self.model.max_frames < self.data.seq_len:
            if user_set(self.model, "max_frames", "model.max_frames"):
                raise ConfigError(
                    f"model.max_frames {self.model.max_frames} is shorter than data.seq_len {self.data.seq_len}: "
                    f"the tokenizer takes a training clip in one pass, so leave model.max_frames out "
                    f"(or set it to at least {self.data.seq_len})"
                )
            self.model.max_frames = self.data.seq_len
        try:
            patch_grid(self.data.resolution, self.model.patch)
        except ValueError:
            raise ConfigError(patch_fix(self.data.resolution, self.model.patch)) from None


def tokenizer_loss(
    model: VideoTokenizer, video: torch.Tensor, l1_weight: float = 0.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The tokenizer stage's training loss, the one training and bench both call: float video
    (B, T, 3, H, W) in [0, 1] -> (scalar loss = pixel MSE + quantiser loss (+ `l1_weight` * L1), the terms
    {"mse", "vq_loss"} as 0-dim tensors on the device). No host reads (see tests/test_bench.py)."""
    recon, _, vq_loss = model(video)
    mse = F.mse_loss(recon, video)
    loss = mse + vq_loss
    if l1_weight:
        loss = loss + l1_weight * F.l1_loss(recon, video)
    return loss, {"mse": mse, "vq_loss": vq_loss}


class TokenizerModule(StageModule):
    stage = "tokenizer"

    def __init__(self, cfg: TokenizerRunConfig):
        super().__init__(cfg)
        self.model = VideoTokenizer(cfg.model)
        self.register_buffer("val_code_counts", torch.zeros(cfg.model.num_codes, dtype=torch.long), persistent=False)

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """The loss of a video batch (uint8 (B, T, H, W, 3)): scalar float tensor; logs train/loss, train/mse and
        train/vq_loss."""
        video = video_to_float(batch["video"])  # (B, T, 3, H, W)
        loss, terms = tokenizer_loss(self.model, video, self.cfg.l1_weight)
        self.log_dict({"train/loss": loss, "train/mse": terms["mse"], "train/vq_loss": terms["vq_loss"]})
        return loss

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Log val/recon_psnr and val/recon_ssim of a video batch, count its codes, and log a sample when due."""
        video = video_to_float(batch["video"])
        recon, ids, _ = self.model(video)
        size = video.shape[0]
        self.log("val/recon_psnr", psnr(recon, video).mean(), batch_size=size, sync_dist=True, prog_bar=True)
        self.log("val/recon_ssim", ssim(recon, video).mean(), batch_size=size, sync_dist=True)
        self.val_code_counts += torch.bincount(ids.flatten(), minlength=self.model.num_codes)
        if self.sample_due(batch_idx):
            self._log_sample(video[:SAMPLE_CLIPS], recon[:SAMPLE_CLIPS])

    def on_validation_epoch_end(self) -> None:
        """Log the codebook usage of the epoch's validation codes (val/codebook_usage, val/codebook_perplexity),
        summed over ranks."""
        counts = self.trainer.strategy.reduce(self.val_code_counts, reduce_op="sum")
        self.log_dict({f"val/{k}": v for k, v in code_count_stats(counts).items()}, rank_zero_only=True)
        self.val_code_counts.zero_()

    def _log_sample(self, real: torch.Tensor, recon: torch.Tensor) -> None:
        """One image with a real row above a reconstructed row per clip, and a gif of real | recon."""
        real, recon = float_to_video(real).numpy(), float_to_video(recon).numpy()  # (N, T, H, W, 3)
        rows = rearrange(np.stack([real, recon], 1), "n two t h w c -> (n two) t h w c")
        self.samples("recon", contact_sheet(rows))
        self.samples("recon", rearrange(np.concatenate([real, recon], 3), "n t h w c -> t (n h) w c"))
