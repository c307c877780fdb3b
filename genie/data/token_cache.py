"""Pre-tokenised training clips for the dynamics stage.

The dynamics model trains on the frozen tokenizer's ids and the frozen LAM's latent actions. Computing
them for every batch decodes video and runs two frozen models each step; instead, every training clip
is encoded once and the results are read back from memory-mapped arrays in `<run_dir>/token_cache/`:

    ids.npy      (N, T, S) uint16 (int32 above 65536 codes): tokenizer ids of clip n
    actions.npy  (N, T-1) uint8 (int32 above 256 actions): latent action of each transition
    meta.json    what the cache was built from; written last, so a killed build is never mistaken for a
                 finished one

The cache is keyed by the tokenizer and LAM weights, the clip settings and the training videos (path,
size, modification time; for a packed dataset, its manifest's training files and their fingerprints): when any
of them changes it is rebuilt. A packed `data.dir` is read once in its stored order (`PackedClips`), so the
cache serves a pack as it serves a folder; training then reads only the cache. Clips are deterministic (no random
crops), and the tokenizer and LAM are in eval mode, so the cached ids are the ones the stage would
compute itself. Validation still reads video: its rollout metrics need the pixels.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch.utils.data import DataLoader, Dataset

from genie.data.cachedir import META_FILE, matches, publish, tmp_dir, videos_digest, wait_for
from genie.data.clips import VideoClips
from genie.data.datamodule import VideoDataModule
from genie.data.ranks import local_rank
from genie.models.pixels import video_to_float
from genie.models.precision import autocast, autocast_dtype
from genie.models.resolution import json_resolution

log = logging.getLogger(__name__)

CACHE_VERSION = 1


def weights_digest(*models: torch.nn.Module) -> str:
    """A hash of the models' weights and buffers (what decides the ids they produce)."""
    digest = hashlib.sha256()
    for model in models:
        for name, tensor in sorted(model.state_dict().items()):
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def source_key(clips) -> dict:
    """What the clips of a video folder (VideoClips) or a packed dataset (PackedClips) are, as plain data: the cut
    and the source files."""
    if isinstance(clips, PackedClips):
        return clips.key
    return {
        "seq_len": clips.seq_len,
        "resolution": json_resolution(clips.resolution),
        "fit": clips.fit,
        "frame_stride": clips.frame_stride,
        "clips": hashlib.sha256(json.dumps(clips.clips).encode()).hexdigest(),
        "videos": videos_digest(clips.videos),
    }


def cache_key(clips, tokenizer: torch.nn.Module, lam: torch.nn.Module, precision: str) -> dict:
    """Everything the cached arrays depend on, as plain data (compared as a whole)."""
    return {
        "version": CACHE_VERSION,
        "weights": weights_digest(tokenizer, lam),
        "precision": precision,
        **source_key(clips),
    }


class PackedClips(Dataset):
    """The training clips of a packed dataset (genie/data/packed.py) in their stored order, map-style: what the
    token cache encodes, row n from clip n. `key` names the pack's cut and its training files' fingerprints.
    Raises DataError for a missing or damaged split."""

    def __init__(self, path: str | Path, manifest: dict):
        from litdata.utilities.env import _DistributedEnv

        from genie.data.clips import DataError
        from genie.data.packed import CUT_KEYS, packed_split

        self.dataset = packed_split(path, "train")
        # every clip, in order, in this one process: litdata would otherwise take this rank's share from WORLD_SIZE
        # (set by torchrun and Lightning's launcher before torch.distributed is initialised)
        self.dataset.distributed_env = _DistributedEnv(world_size=1, global_rank=0, num_nodes=1)
        train = manifest["splits"]["train"]
        if len(self.dataset) != train["clips"]:
            raise DataError(
                f"{path}: {len(self.dataset)} training clips in the shards, {train['clips']} in its manifest"
            )
        self.key = {key: manifest[key] for key in (*CUT_KEYS, "clip_step")}
        self.key["pack"] = hashlib.sha256(
            json.dumps([train["clips"], train["files"], train["fingerprints"]]).encode()
        ).hexdigest()
        self.seq_len = manifest["seq_len"]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict:
        return self.dataset[index]


@torch.no_grad()
def build_token_cache(
    clips: VideoClips,
    tokenizer,
    lam,
    cache_dir: str | Path,
    device: torch.device,
    precision: str = "32-true",
    batch_size: int = 32,
    num_workers: int = 2,
    progress: bool = True,
) -> Path:
    """Encode every clip of `clips` (VideoClips, or PackedClips) with the frozen models and write the cache to
    `cache_dir` (atomically)."""
    from tqdm import tqdm

    cache_dir = Path(cache_dir)
    key = cache_key(clips, tokenizer, lam, precision)
    tmp = tmp_dir(cache_dir)
    num_codes, tokens_per_frame = tokenizer.num_codes, tokenizer.grid_size[0] * tokenizer.grid_size[1]
    id_dtype = np.uint16 if num_codes <= 2**16 else np.int32
    action_dtype = np.uint8 if lam.cfg.num_actions <= 2**8 else np.int32
    n, t = len(clips), clips.seq_len
    ids_out = np.lib.format.open_memmap(tmp / "ids.npy", mode="w+", dtype=id_dtype, shape=(n, t, tokens_per_frame))
    actions_out = np.lib.format.open_memmap(tmp / "actions.npy", mode="w+", dtype=action_dtype, shape=(n, t - 1))
    tokenizer, lam = tokenizer.to(device).eval(), lam.to(device).eval()
    # a packed split is read in one process: litdata's workers would each stream a share, not rows in order
    workers = 0 if isinstance(clips, PackedClips) else num_workers
    loader = DataLoader(clips, batch_size=batch_size, shuffle=False, num_workers=workers)
    start, row = time.perf_counter(), 0
    with tqdm(total=n, desc="token cache", unit="clip", disable=None if progress else True) as bar:
        for batch in loader:
            video = video_to_float(batch["video"].to(device, non_blocking=True))  # (B, T, 3, H, W)
            with autocast(device, autocast_dtype(device, precision)):
                ids = rearrange(tokenizer.encode(video), "b t h w -> b t (h w)")
                actions = lam.infer_actions(video)
            b = ids.shape[0]
            ids_out[row : row + b] = ids.cpu().numpy().astype(id_dtype)
            actions_out[row : row + b] = actions.cpu().numpy().astype(action_dtype)
            row += b
            bar.update(b)
    ids_out.flush()
    actions_out.flush()
    del ids_out, actions_out
    seconds = time.perf_counter() - start
    meta = {
        **key,
        "num_clips": n,
        "tokens_per_frame": tokens_per_frame,
        "num_codes": num_codes,
        "build_seconds": round(seconds, 2),
        "device": str(device),
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=2))
    publish(tmp, cache_dir, key)  # several builders (one per node on a shared file system): the first one in wins
    log.warning("token cache: %d clips encoded in %.1f s on %s -> %s", n, seconds, device, cache_dir)
    return cache_dir


def ensure_token_cache(
    clips: VideoClips,
    tokenizer,
    lam,
    cache_dir: str | Path,
    device: torch.device,
    precision: str = "32-true",
    batch_size: int = 32,
    num_workers: int = 2,
    progress: bool = True,
    wait_seconds: float = 4 * 3600,
) -> Path:
    """The cache for these clips and models: reused when its key matches, else built.

    Under a multi-process launch only local rank 0 builds; the other ranks wait for its meta.json.
    """
    cache_dir = Path(cache_dir)
    key = cache_key(clips, tokenizer, lam, precision)
    if matches(cache_dir, key):
        return cache_dir
    if local_rank() != 0:
        return wait_for(cache_dir, key, "token cache", wait_seconds)
    return build_token_cache(clips, tokenizer, lam, cache_dir, device, precision, batch_size, num_workers, progress)


class TokenClips(Dataset):
    """The cached clips: item n is what the dynamics stage would compute from VideoClips item n."""

    def __init__(self, cache_dir: str | Path):
        cache_dir = Path(cache_dir)
        self.ids = np.load(cache_dir / "ids.npy", mmap_mode="r")
        self.actions = np.load(cache_dir / "actions.npy", mmap_mode="r")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {
            "ids": torch.from_numpy(self.ids[index].astype(np.int64)),  # (T, S)
            "latent_actions": torch.from_numpy(self.actions[index].astype(np.int64)),  # (T-1,)
        }


class TokenDataModule(VideoDataModule):
    """Training batches from the token cache, validation batches from video (as VideoDataModule)."""

    def __init__(self, cfg, cache_dir: str | Path):
        super().__init__(cfg)
        self.cache_dir = Path(cache_dir)
        self.train_tokens: TokenClips | None = None
        self._packed: PackedClips | None = None

    def build_cache(self, tokenizer, lam, device: torch.device, precision: str, progress: bool = True) -> Path:
        """Encode the training clips (or reuse a matching cache); call before training starts. A packed data.dir
        is read in its stored order (PackedClips)."""
        super().setup()
        return ensure_token_cache(
            self._clips(),
            tokenizer,
            lam,
            self.cache_dir,
            device,
            precision,
            batch_size=2 * self.cfg.batch_size,
            num_workers=self.cfg.num_workers,
            progress=progress,
        )

    def _clips(self):
        """The training clips the cache rows follow: the folder's VideoClips, or a packed dataset's PackedClips."""
        if self.manifest is None:
            return self.train_set
        if self._packed is None:
            self._packed = PackedClips(self.cfg.dir, self.manifest)
        return self._packed

    def setup(self, stage: str | None = None) -> None:
        """VideoDataModule.setup, then open the token cache. Raises RuntimeError when the cache holds a different
        number of clips than the training set (delete the folder to rebuild it); DataError as VideoDataModule.setup."""
        super().setup(stage)
        if self.train_tokens is None:
            self.train_tokens = TokenClips(self.cache_dir)
            expected = len(self._clips())
            if len(self.train_tokens) != expected:
                raise RuntimeError(
                    f"{self.cache_dir}: {len(self.train_tokens)} cached clips for {expected} "
                    f"training clips; delete the folder to rebuild it"
                )

    def train_dataloader(self) -> DataLoader:
        """Batches {"ids": int64 (B, T, S), "latent_actions": int64 (B, T-1)} from the token cache, in the same
        clip order as video training (for a pack too: the resumable, rank-sharded ClipStream over the cached rows)."""
        self.setup()  # the clips and the cache first
        sampler = self.train_sampler(len(self.train_tokens))
        # the same clip order as video training; reading a few kB of ids per clip needs no worker processes
        return DataLoader(
            self.train_tokens,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            num_workers=0,
            pin_memory=torch.cuda.is_available(),
        )
