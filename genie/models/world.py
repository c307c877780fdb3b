"""The world-model bundle: tokenizer + LAM + dynamics in one file, and an environment-like API on it.

A bundle is a torch file holding only tensors and plain data, so it loads with `weights_only=True`:
{"format": "genie-bundle", "version": 1, "tokenizer" | "lam" | "dynamics": {"config", "state_dict"},
"sampling": {...}, "frames": {"resolution": [H, W], "fit": "crop" | "pad" | "resize", "stride": S} (the frame size,
how frames of another aspect ratio are fitted to it, and how many video frames one world step spans: what the
training data got, data.fit and data.frame_stride; a bundle without "stride" steps one frame at a time),
"prompt": uint8 (T, H, W, 3) sample prompt frames, "meta": {...} plain data about the
model: "training" (the data it was trained on, genie/evaluate.py reads it to keep scores on held-out files)
and, where the training folder had true actions, the game's action names and the latent-to-true mapping}.

    world = WorldModel.load("runs/sprites/world_model.pt")
    frame = world.reset(prompt_frames)          # uint8 (B, H, W, 3)
    frame = world.step([3])                     # one latent action per batch element
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import torch
from einops import rearrange
from torch import nn

from genie.config import ConfigError
from genie.models.checkpoint import RunError, dataclass_from, load_checkpoint, load_weights
from genie.models.dynamics import DynamicsConfig, DynamicsModel
from genie.models.lam import LAMConfig, LatentActionModel
from genie.models.pixels import fit_frames, float_to_video, video_to_float
from genie.models.resolution import DEFAULT_FIT, check_fit, frame_size
from genie.models.sampling import RolloutState, check_slide
from genie.models.tokenizer import DecodeStream, TokenizerConfig, VideoTokenizer

BUNDLE_FORMAT = "genie-bundle"
BUNDLE_VERSION = 2  # 2: "frames" (resolution as [H, W], fit)


class ActionError(ValueError):
    """A latent action id outside the model's vocabulary."""


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """ "auto" -> CUDA when available, else CPU; anything else -> torch.device(device) (RuntimeError if torch
    cannot parse it)."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def default_slide(max_frames: int) -> int:
    """The default context slide for a window of `max_frames` frames: half the window, at least 1."""
    return max(1, max_frames // 2)


def is_bundle(obj) -> bool:
    """True when `obj` (a loaded file) is a world-model bundle dict (format BUNDLE_FORMAT)."""
    return isinstance(obj, dict) and obj.get("format") == BUNDLE_FORMAT


def step_frames(frames, stride: int, end: bool = False):
    """The frames of a video (T, ...) one world step apart: every `stride`-th from the first, or with `end` the
    ones ending at the last frame (a prompt's newest frame is the one the world continues from)."""
    if stride == 1:
        return frames
    return frames[(len(frames) - 1) % stride :: stride] if end else frames[::stride]


def span_frames(steps: int, stride: int) -> int:
    """Video frames that `steps` frames one world step apart take: (steps - 1) * stride + 1."""
    return (steps - 1) * stride + 1


class WorldModel(nn.Module):
    def __init__(
        self,
        tokenizer: nn.Module,
        lam: nn.Module,
        dynamics: DynamicsModel,
        prompt: np.ndarray | None = None,
        steps: int | None = None,
        temperature: float | None = None,
        slide: int | None = None,
        meta: dict | None = None,
        fit: str = DEFAULT_FIT,
        frame_stride: int = 1,
    ):
        """`fit`: how frames of another aspect ratio are fitted to the model's resolution
        (genie.models.pixels.fit_frames); pass the data.fit the models were trained with. `frame_stride`: video
        frames one step spans (the data.frame_stride they were trained with); real videos are read every
        `frame_stride`-th frame to prompt or score the world (`step_frames`)."""
        super().__init__()
        self.meta = dict(meta or {})  # plain data saved in the bundle (see the module docstring)
        self.tokenizer, self.lam, self.dynamics = tokenizer, lam, dynamics
        self.resolution = tokenizer.cfg.resolution  # int (square) or (H, W), as the configs hold it
        self.frame_size = frame_size(self.resolution)  # (H, W)
        self.fit = check_fit(fit, "fit")
        if int(frame_stride) < 1:
            raise ValueError(f"frame_stride must be at least 1, got {frame_stride}")
        self.frame_stride = int(frame_stride)
        self.num_actions = dynamics.cfg.num_actions
        self.prompt = prompt
        self.steps = steps or dynamics.cfg.maskgit_steps
        self.temperature = dynamics.cfg.temperature if temperature is None else temperature
        # frames dropped when the context window is full (genie/models/sampling.py): half the window re-encodes the
        # context once every max_frames/2 frames instead of at every frame (docs/benchmarks.md)
        self.slide = slide or default_slide(dynamics.cfg.max_frames)
        self.generator: torch.Generator | None = None
        self.state: RolloutState | None = None
        self.decoder: DecodeStream | None = None
        self.eval()

    # --------------------------------------------------------------------------------- save / load

    def save(self, path: str | Path) -> Path:
        """Write the bundle (three models' configs and weights on the CPU, sampling settings, frame size and fit,
        meta, sample prompt) to `path` atomically (via a .tmp file), creating the folder; returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        bundle = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "sampling": {"steps": self.steps, "temperature": self.temperature, "slide": self.slide},
            "frames": {"resolution": list(self.frame_size), "fit": self.fit, "stride": self.frame_stride},
        }
        for name in ("tokenizer", "lam", "dynamics"):
            model = getattr(self, name)
            bundle[name] = {
                "config": dataclasses.asdict(model.cfg),
                "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
            }
        if self.meta:
            bundle["meta"] = self.meta
        if self.prompt is not None:
            bundle["prompt"] = torch.from_numpy(np.ascontiguousarray(self.prompt))
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two writers never share one temporary file
        torch.save(bundle, tmp)
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> WorldModel:
        """The world model in the bundle at `path`, on `device` ("auto", "cpu", "cuda", ...). Raises RunError when the
        file is missing, is not a bundle or holds what torch.load(weights_only=True) refuses; ConfigError for a
        stored config it cannot parse."""
        bundle = load_checkpoint(path)
        if not is_bundle(bundle):
            raise RunError(
                f"{path} is not a world-model bundle "
                "(make one with `genie train all`, which writes <run_dir>/world_model.pt)"
            )
        models = {}
        for name, config_cls, model_cls in (
            ("tokenizer", TokenizerConfig, VideoTokenizer),
            ("lam", LAMConfig, LatentActionModel),
            ("dynamics", DynamicsConfig, DynamicsModel),
        ):
            model = model_cls(dataclass_from(config_cls, bundle[name]["config"]))
            load_weights(model, bundle[name]["state_dict"], path, name)
            models[name] = model
        prompt = bundle["prompt"].numpy() if "prompt" in bundle else None
        frames = bundle.get("frames") or {}
        fit, stride = frames.get("fit", DEFAULT_FIT), int(frames.get("stride", 1))
        world = cls(
            **models, prompt=prompt, meta=bundle.get("meta"), fit=fit, frame_stride=stride, **bundle.get("sampling", {})
        )
        return world.to(resolve_device(device))

    def set_sampling(
        self,
        steps: int | None = None,
        temperature: float | None = None,
        slide: int | None = None,
        guidance: float | None = None,
    ) -> WorldModel:
        """Change the sampling settings that are given (None keeps the current one); checked here, not mid-rollout
        (a bad value is a ConfigError naming the setting). `guidance`: the dynamics model's classifier-free guidance
        weight (DynamicsConfig.guidance; saved with the bundle's dynamics config)."""
        if guidance is not None and guidance < 0:
            raise ConfigError(f"guidance must be >= 0, got {guidance}")
        if steps is not None and steps < 1:
            raise ConfigError(f"MaskGIT steps must be at least 1, got {steps}")
        if temperature is not None and temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {temperature}")
        if slide is not None:
            check_slide(slide, self.dynamics.cfg.max_frames)
        self.steps = steps or self.steps
        self.temperature = self.temperature if temperature is None else temperature
        self.slide = slide or self.slide
        if guidance is not None:
            self.dynamics.cfg.guidance = float(guidance)
        return self

    def compile_sampling(self, mode: str | None = None) -> WorldModel:
        """Compile the per-frame passes of play, the dynamics model's sampling pass and the tokenizer's decoding pass
        (CUDA graphs on a GPU); see DynamicsModel.compile_sampling."""
        self.dynamics.compile_sampling(mode)
        self.tokenizer.compile_decoding(mode)
        return self

    # ------------------------------------------------------------------------------- environment

    @property
    def device(self) -> torch.device:
        """The device the model's parameters are on."""
        return next(self.parameters()).device

    def to_float(self, frames) -> torch.Tensor:
        """uint8 frames (H,W,3), (T,H,W,3) or (B,T,H,W,3) of any size -> float32 (B, T, 3, H, W) in [0, 1] at the
        model's resolution, fitted by genie.models.pixels.fit_frames with the bundle's fit."""
        frames = np.asarray(frames)
        frames = frames.reshape((1,) * (5 - frames.ndim) + frames.shape)  # (B, T, H, W, 3)
        fitted = fit_frames(frames.reshape(-1, *frames.shape[2:]), self.frame_size, self.fit)  # (B*T, H, W, 3)
        video = torch.from_numpy(np.ascontiguousarray(fitted)).unflatten(0, (frames.shape[0], -1))  # (B, T, H, W, 3)
        return video_to_float(video).to(self.device)

    def encode(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """float video (B, T, 3, H, W) -> (ids (B, T, S) with S = h*w tokens, inferred latent actions (B, T-1))."""
        ids = rearrange(self.tokenizer.encode(video), "b t h w -> b t (h w)")
        actions = self.lam.infer_actions(video) if video.shape[1] > 1 else ids.new_zeros(ids.shape[0], 0)
        return ids, actions

    def grid_ids(self, ids: torch.Tensor) -> torch.Tensor:
        """Token ids (..., S) -> (..., h, w)."""
        return ids.unflatten(-1, self.dynamics.grid_size)

    @torch.no_grad()
    def reset(self, prompt=None, seed: int | None = None) -> np.ndarray:
        """Start from prompt frames (uint8 (T,H,W,3), (B,T,H,W,3) or one image); returns the first frame
        (B, H, W, 3)."""
        if prompt is None:
            if self.prompt is None:
                raise ValueError("this bundle has no sample prompt: pass prompt frames")
            prompt = self.prompt
        video = self.to_float(prompt)[:, -(self.dynamics.cfg.max_frames - 1) :]
        ids, actions = self.encode(video)
        self.state = RolloutState(self.dynamics, ids, actions, slide=self.slide)
        # frames are decoded as they come, with the decoder's own cache (one frame of decoder work a step), in
        # the dynamics window and slide, so each frame is the newest of the decoded context; a tokenizer with a
        # shorter window keeps to its own (time positions past its max_frames were never trained)
        window = min(self.tokenizer.cfg.max_frames, self.dynamics.cfg.max_frames)
        slide = self.slide if window == self.dynamics.cfg.max_frames else default_slide(window)
        self.decoder = DecodeStream(self.tokenizer, self.grid_ids(self.state.ids), slide=slide, window=window)
        self.generator = torch.Generator(device=self.device).manual_seed(seed) if seed is not None else None
        return self.to_uint8(self.decoder.frame)

    @torch.no_grad()
    def step(self, action) -> np.ndarray:
        """Advance every batch element by one latent action (int or sequence of B ints); returns uint8 (B, H, W, 3)."""
        return self.to_uint8(self.step_float(action))

    @torch.no_grad()
    def step_float(self, action) -> torch.Tensor:
        """`step`, returning the new frames as float (B, 3, H, W) in [0, 1] on the model's device.

        Raises RuntimeError before reset, ValueError for a wrong number of actions, ActionError for an id
        outside 0..num_actions-1."""
        if self.state is None:
            raise RuntimeError("call reset(prompt) before step(action)")
        batch = self.state.ids.shape[0]
        action = torch.as_tensor(action, dtype=torch.long).reshape(-1)
        if action.numel() == 1 and batch > 1:
            action = action.expand(batch)
        if action.numel() != batch:
            raise ValueError(f"expected {batch} actions (one per batch element), got {action.numel()}")
        if int(action.min()) < 0 or int(action.max()) >= self.num_actions:
            raise ActionError(f"latent action ids must be in 0..{self.num_actions - 1}, got {action.tolist()}")
        new_ids = self.state.step(action.to(self.device), self.steps, self.temperature, self.generator)
        return self.decoder.push(self.grid_ids(new_ids))

    @staticmethod
    def to_uint8(frame: torch.Tensor) -> np.ndarray:
        """float (B, 3, H, W) in [0, 1] -> uint8 (B, H, W, 3) on the host."""
        return float_to_video(frame).numpy()
