"""Latent actions for whole videos: `genie infer-actions`.

The LAM encodes each transition from its two frames alone, so a video of any length is read in chunks
(ActionStream, LatentActionModel.encode_video) and the ids do not depend on the chunking. Videos are
streamed: decoded a chunk at a time, resized to the LAM's size at once, and dropped once encoded, so an
hour-long HD recording takes the memory of a short clip.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from genie.data.video import VideoError, VideoWriter, iter_video
from genie.models.checkpoint import load_checkpoint, load_stage_model, recorded_fit, recorded_stride
from genie.models.lam import LAMConfig, LatentActionModel
from genie.models.pixels import fit_frames, video_to_float
from genie.models.resolution import DEFAULT_FIT, frame_size

log = logging.getLogger(__name__)


def to_model_input(video: np.ndarray, resolution, fit: str = DEFAULT_FIT) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (T, 3, h, w) in [0, 1] at the LAM's resolution (int or (h, w)), fitted by
    genie.models.pixels.fit_frames."""
    video = fit_frames(np.asarray(video), resolution, fit)
    return video_to_float(torch.from_numpy(np.ascontiguousarray(video)))


class ActionStream:
    """Latent actions of a stream of frames: push chunks of frames in, get the ids of their transitions out.

    The LAM encodes each transition from its two frames alone (genie.models.lam), so the ids do not depend on
    how the video is chunked: the frames are kept as uint8 at the LAM's size until `batch_size` windows of
    the LAM's `max_frames` are waiting, run together (LatentActionModel.encode_video), and dropped but for
    the last one. Memory does not grow with the video.
    """

    def __init__(self, model: LatentActionModel, batch_size: int = 32, fit: str = DEFAULT_FIT, frame_stride: int = 1):
        """`fit`: how frames of another aspect ratio than the LAM's are fitted (genie.models.pixels.fit_frames);
        `frame_stride`: the LAM reads every `frame_stride`-th frame pushed (the data.frame_stride it trained with),
        so a transition spans that many frames."""
        self.model, self.batch_size, self.frame_stride = model, batch_size, frame_stride
        self.resolution, self.fit = model.cfg.resolution, fit
        self.chunk = batch_size * (model.cfg.max_frames - 1)  # transitions run at once
        self.device = next(model.parameters()).device
        self.frames = np.empty((0, *frame_size(self.resolution), 3), dtype=np.uint8)  # not yet encoded, + the last
        self.count = 0  # frames pushed so far
        self.read = 0  # frames the LAM reads (every frame_stride-th pushed)

    def push(self, video: np.ndarray) -> list[int]:
        """Add uint8 frames (N, H, W, 3); returns the ids of the transitions settled by them, in order."""
        video = np.asarray(video)
        chosen = self.reads(video)
        self.count += len(video)
        self.read += len(chosen)
        self.frames = np.concatenate([self.frames, fit_frames(chosen, self.resolution, self.fit)])
        return self._run() if len(self.frames) > self.chunk else []

    def reads(self, video: np.ndarray) -> np.ndarray:
        """The frames of the next pushed chunk `video` the LAM reads: frames 0, s, 2s, ... of the whole stream."""
        return video[(-self.count) % self.frame_stride :: self.frame_stride]

    def _run(self) -> list[int]:
        clip = to_model_input(self.frames, self.resolution)[None].to(self.device)  # (1, N, 3, H, W)
        ids = self.model.encode_video(clip, self.batch_size)[0][0].cpu().tolist()
        self.frames = self.frames[-1:]
        return ids

    def finish(self) -> list[int]:
        """The ids of the remaining transitions. Raises ValueError when fewer than 2 frames were pushed."""
        if self.read < 2:
            need = self.frame_stride + 1
            raise ValueError(f"a video needs at least {need} frames for one action, got {self.count}")
        return self._run() if len(self.frames) > 1 else []


@torch.no_grad()
def infer_actions(
    model: LatentActionModel, video: np.ndarray, batch_size: int = 32, fit: str = DEFAULT_FIT
) -> list[int]:
    """Latent action ids (T-1 of them) for uint8 frames (T, H, W, 3) of any length and size; frames are fitted
    to the LAM's resolution by genie.models.pixels.fit_frames. Raises ValueError for fewer than 2 frames."""
    if len(video) < 2:
        raise ValueError(f"a video needs at least 2 frames for one action, got {len(video)}")
    stream = ActionStream(model, batch_size, fit=fit)
    return stream.push(video) + stream.finish()


def stamp_actions(video: np.ndarray, actions: list[int], scale: int | None = None) -> np.ndarray:
    """Upscaled uint8 frames (T, sH, sW, 3) with "a=<id>" (the action taken after the frame) stamped on each."""
    from PIL import Image, ImageDraw

    scale = scale or max(1, 256 // max(video.shape[1:3]))
    out = []
    for t, frame in enumerate(video):
        image = Image.fromarray(np.ascontiguousarray(frame)).resize(
            (frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST
        )
        draw = ImageDraw.Draw(image)
        label = f"a={actions[t]}" if t < len(actions) else "end"
        box = draw.textbbox((4, 4), label)
        draw.rectangle((box[0] - 2, box[1] - 2, box[2] + 2, box[3] + 2), fill=(0, 0, 0))
        draw.text((4, 4), label, fill=(255, 255, 255))
        out.append(np.asarray(image))
    return np.stack(out)


def annotated_path(annotate_to: Path, index: int, count: int) -> Path:
    """The annotated file of video `index`: the given path for one video, `<stem>_<index><suffix>` for several."""
    return annotate_to if count == 1 else annotate_to.with_name(f"{annotate_to.stem}_{index:03d}{annotate_to.suffix}")


@torch.no_grad()
def video_actions(
    model: LatentActionModel,
    path: str | Path,
    annotate_to: Path | None = None,
    fit: str = DEFAULT_FIT,
    frame_stride: int = 1,
) -> dict:
    """{"path", "num_frames", "actions"} of one video, streamed a chunk at a time (memory does not grow
    with its length) and fitted to the LAM's resolution by `fit`; the LAM reads every `frame_stride`-th frame, so
    action i is the transition from frame i*s to (i+1)*s. With `annotate_to`, the frames it read, with their
    actions stamped, are written as they settle. Raises VideoError for a video too short for one action."""
    stream = ActionStream(model, fit=fit, frame_stride=frame_stride)
    resolution = model.cfg.resolution
    scale = max(1, 256 // max(frame_size(resolution)))
    actions: list[int] = []
    waiting: list[np.ndarray] = []  # frames (at the LAM's size) whose action is not settled yet
    stamped = 0  # frames written to the annotated video

    def stamp(writer, final: bool = False) -> None:
        nonlocal stamped, waiting
        ready = len(actions) - stamped + (1 if final else 0)  # the last frame is stamped "end"
        if ready <= 0 or not waiting:
            return
        frames = np.concatenate(waiting)
        writer.write(stamp_actions(frames[:ready], actions[stamped : stamped + ready], scale))
        waiting, stamped = [frames[ready:]], stamped + ready

    writer = VideoWriter(annotate_to, fps=5, lossless=False) if annotate_to is not None else None
    try:
        for frames in iter_video(path, resolution=resolution, progress=True, fit=fit):
            read = stream.reads(frames)  # before push moves the stream on
            actions += stream.push(frames)
            if writer is not None:
                waiting.append(read)
                stamp(writer)
        if stream.read < 2:
            need = frame_stride + 1
            raise VideoError(f"{path}: only {stream.count} frames, at least {need} are needed for an action")
        actions += stream.finish()
        if writer is not None:
            stamp(writer, final=True)
    finally:
        if writer is not None:
            writer.close()
    return {"path": str(path), "num_frames": stream.count, "actions": actions}


def infer_actions_command(
    model_path: str | Path,
    videos: list[str | Path],
    out: str | Path,
    annotate: str | Path | None = None,
) -> dict:
    """Write {"model", "num_actions", "frame_stride", "videos": [{"path", "num_frames", "actions"}]} to `out` as JSON
    (action i of a video: its transition from frame i*frame_stride to (i+1)*frame_stride, the stride the LAM
    trained with).

    Unreadable videos are skipped with one line each; if any was skipped the command still writes the
    others, then fails with a one-line summary (non-zero exit).
    """
    ckpt = load_checkpoint(model_path)
    model = load_stage_model(model_path, "lam", LAMConfig, LatentActionModel, label="LAM", ckpt=ckpt)
    fit = recorded_fit(ckpt)  # frames of another aspect are fitted as the LAM's training frames were
    stride = recorded_stride(ckpt)  # and read as far apart
    del ckpt
    annotate_to = Path(annotate) if annotate else None
    if annotate_to is not None and annotate_to.suffix.lower() not in (".mp4", ".gif", ".mkv", ".avi"):
        raise VideoError(f"--annotate {annotate_to}: give a .mp4 or .gif file name")
    results, failed = [], []
    for index, path in enumerate(videos):
        target = annotated_path(annotate_to, index, len(videos)) if annotate_to is not None else None
        try:
            results.append(video_actions(model, path, target, fit=fit, frame_stride=stride))
        except VideoError as e:
            if len(videos) == 1:
                raise
            log.warning("skipping %s", e)
            failed.append({"path": str(path), "error": str(e)})
            continue
        if target is not None:
            log.info("annotated video: %s", target)
    report = {"model": str(model_path), "num_actions": model.cfg.num_actions, "frame_stride": stride, "videos": results}
    if failed:
        report["failed"] = failed
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    log.info("latent actions of %d videos: %s", len(results), out)
    if failed:
        raise VideoError(
            f"{len(failed)} of {len(videos)} videos could not be read (see warnings); the others are in {out}"
        )
    return report
