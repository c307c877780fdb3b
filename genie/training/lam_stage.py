"""Training the latent action model: next-frame reconstruction + VQ loss, validated against ground truth.

Training logs `train/loss`, `train/recon_mse`, `train/vq_loss` and `train/codebook_perplexity`; validation logs
`val/lam_psnr`, `val/lam_delta_psnr`, `val/codebook_usage`, `val/codebook_perplexity` and, where the data has
ground-truth actions, `val/action_nmi` and `val/action_probe_acc`: the true actions are read only by those two
metrics, never by the loss.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from genie.config import ConfigError, DataConfig, TrainConfig, follow_data
from genie.metrics import code_perplexity, codebook_stats, linear_probe_accuracy, normalized_mutual_info, psnr
from genie.models.lam import LAMConfig, LatentActionModel
from genie.models.pixels import float_to_video, video_to_float
from genie.models.resolution import patch_fix, patch_grid, same_frame_size
from genie.training.trainer import StageModule


@dataclass
class LAMRunConfig:
    """the latent action model stage"""

    run_dir: str = "runs/lam"
    """run folder: checkpoints, config.yaml, logs (an existing one is resumed)"""
    data: DataConfig = field(default_factory=DataConfig)
    """data: the video folder, clips and loader"""
    model: LAMConfig = field(default_factory=LAMConfig)
    """model: the latent action model"""
    train: TrainConfig = field(default_factory=TrainConfig)
    """train: optimiser, schedule, Trainer, logging and checkpoints"""

    def __post_init__(self):
        # the data decides frame size and window; the model follows (a different model value is refused)
        follow_data(self.model, "resolution", self.data.resolution, "data.resolution", same=same_frame_size)
        follow_data(self.model, "max_frames", self.data.seq_len, "data.seq_len")
        try:
            patch_grid(self.data.resolution, self.model.patch)
        except ValueError:
            raise ConfigError(patch_fix(self.data.resolution, self.model.patch)) from None
        if self.data.seq_len < 2:
            raise ConfigError(f"data.seq_len {self.data.seq_len}: the LAM needs clips of at least 2 frames")


def lam_loss(model: LatentActionModel, video: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The LAM stage's training loss, the one training and bench both call: float video (B, T, 3, H, W) in
    [0, 1] -> (scalar loss = MSE of the predicted frames 1..T-1 + quantiser loss, {"recon_mse", "vq_loss"} as
    0-dim tensors and "ids", the latent action ids (B, T-1)). No host reads (see tests/test_bench.py)."""
    pred, ids, vq_loss = model(video)
    recon = F.mse_loss(pred, video[:, 1:])
    return recon + vq_loss, {"recon_mse": recon, "vq_loss": vq_loss, "ids": ids}


class LAMModule(StageModule):
    stage = "lam"

    def __init__(self, cfg: LAMRunConfig):
        super().__init__(cfg)
        self.model = LatentActionModel(cfg.model)
        self._val: dict[str, list] = {}

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        """The loss of a video batch (uint8 (B, T, H, W, 3)): scalar float tensor; logs train/loss, train/recon_mse,
        train/vq_loss and the batch's codebook perplexity."""
        video = video_to_float(batch["video"])  # (B, T, 3, H, W)
        loss, terms = lam_loss(self.model, video)
        # on the device: no host read per step
        batch_perplexity = code_perplexity(terms["ids"], self.cfg.model.num_actions)
        self.log_dict(
            {
                "train/loss": loss,
                "train/recon_mse": terms["recon_mse"],
                "train/vq_loss": terms["vq_loss"],
                "train/codebook_perplexity": batch_perplexity,
            },
            prog_bar=False,
        )
        return loss

    def on_validation_epoch_start(self) -> None:
        """Empty the per-epoch validation accumulators."""
        self._val = {"psnr": [], "psnr_random": [], "ids": [], "z": [], "actions": []}

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        """Accumulate a video batch's next-frame PSNR (with the inferred and with random codes), codes, encoder
        outputs and true actions, and log sample predictions when due."""
        video = video_to_float(batch["video"])  # (B, T, 3, H, W)
        enc = self.model.encode(video)
        z_q, ids, z = enc.z_q, enc.ids, enc.z
        pred = self.model.decode(video[:, :-1], z_q)
        # the same past frames with uniformly random codes: how much the decoder relies on the code
        random_ids = torch.randint_like(ids, self.cfg.model.num_actions)
        pred_random = self.model.decode(video[:, :-1], self.model.vq.lookup(random_ids))
        self._val["psnr"].append(psnr(pred, video[:, 1:]).flatten().cpu())
        self._val["psnr_random"].append(psnr(pred_random, video[:, 1:]).flatten().cpu())
        self._val["ids"].append(ids.flatten().cpu())
        self._val["z"].append(z.flatten(0, 1).float().cpu())
        self._val["actions"].append(batch["actions"].flatten().cpu())
        if self.sample_due(batch_idx):
            self._log_samples(video, pred, pred_random)

    def on_validation_epoch_end(self) -> None:
        """Log val/lam_psnr, val/lam_delta_psnr, the codebook statistics and, where true actions are known,
        val/action_nmi and val/action_probe_acc."""
        values = {k: torch.cat(v) for k, v in self._val.items() if v}
        if not values:
            return
        lam_psnr = values["psnr"].mean().item()
        metrics = {
            "lam_psnr": lam_psnr,
            "lam_delta_psnr": lam_psnr - values["psnr_random"].mean().item(),
            **codebook_stats(values["ids"], self.cfg.model.num_actions),
        }
        known = values["actions"] >= 0
        if known.any():
            truth = values["actions"][known].numpy()
            metrics["action_nmi"] = normalized_mutual_info(values["ids"][known].numpy(), truth)
            metrics["action_probe_acc"] = linear_probe_accuracy(values["z"][known].numpy(), truth)
        # NMI and the probe are computed per rank (on its share of val clips) and averaged across ranks
        self.log_dict(
            {f"val/{k}": float(v) for k, v in metrics.items() if np.isfinite(v)}, prog_bar=True, sync_dist=True
        )
        self._val = {}

    def _log_samples(self, video: torch.Tensor, pred: torch.Tensor, pred_random: torch.Tensor, clips: int = 4) -> None:
        """A video of real | predicted | predicted-with-random-codes next frames, one row per clip."""
        columns = [float_to_video(x[:clips]) for x in (video[:, 1:], pred, pred_random)]  # each (N, T-1, H, W, 3)
        rows = torch.cat(columns, dim=3)  # (N, T-1, H, 3W, 3)
        frames = torch.cat(list(rows), dim=1)  # (T-1, N*H, 3W, 3)
        self.samples("lam", frames.numpy())
