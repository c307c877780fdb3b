"""Latent actions for whole videos: `genie infer-actions`.

The LAM sees `max_frames` frames at once; longer videos are cut into overlapping windows. Its encoder
is causal, so the id of transition t depends only on the window's frames up to t+1; each transition
takes its id from the window that shows it with the most frames before it. Videos are streamed: decoded
a chunk at a time, resized to the LAM's size at once, and dropped when no window needs them, so an
hour-long HD recording takes the memory of a short clip.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch

from genie.data.video import VideoError, VideoWriter, iter_video
from genie.models.checkpoint import load_checkpoint, load_stage_model, recorded_fit
from genie.models.lam import LAMConfig, LatentActionModel
from genie.models.pixels import fit_frames, video_to_float
from genie.models.resolution import DEFAULT_FIT, frame_size

log = logging.getLogger(__name__)


def to_model_input(video: np.ndarray, resolution, fit: str = DEFAULT_FIT) -> torch.Tensor:
    """uint8 (T, H, W, 3) -> float32 (T, 3, h, w) in [0, 1] at the LAM's resolution (int or (h, w)), fitted by
    genie.models.pixels.fit_frames."""
    video = fit_frames(np.asarray(video), resolution, fit)
    return video_to_float(torch.from_numpy(np.ascontiguousarray(video)))


class WindowedActions:
    """Latent actions of a stream of frames: push chunks of frames in, get the ids settled so far out.

    Windows of `window` frames start half a window apart; at the end one more window ends at the last
    frame. Each transition takes its id from the first window that shows it, which is the window that
    shows it with the most frames before it. Only the frames a waiting window still needs are kept, as
    uint8 at the LAM's size (at most `batch_size` half-windows and a window), so memory does not grow with
    the video; windows are made float only when a batch of them runs.
    """

    def __init__(
        self, model: LatentActionModel, window: int | None = None, batch_size: int = 32, fit: str = DEFAULT_FIT
    ):
        """`fit`: how frames of another aspect ratio than the LAM's are fitted (genie.models.pixels.fit_frames)."""
        self.window = window or model.cfg.max_frames
        if not 2 <= self.window <= model.cfg.max_frames:
            raise ValueError(f"window must be between 2 and the LAM's {model.cfg.max_frames} frames, got {self.window}")
        self.model, self.batch_size = model, batch_size
        self.resolution, self.fit = model.cfg.resolution, fit
        self.stride = max(1, self.window // 2)
        self.device = next(model.parameters()).device
        self.frames = np.empty((0, *frame_size(self.resolution), 3), dtype=np.uint8)  # frames offset .. count-1
        self.offset = 0
        self.count = 0  # frames pushed so far
        self.next_start = 0  # where the next regular window starts
        self.pending: list[tuple[int, int]] = []  # windows waiting to run: (start, length)
        self.settled = 0  # transitions whose id has been given out

    def push(self, video: np.ndarray) -> list[int]:
        """Add uint8 frames (N, H, W, 3); returns the ids of the transitions settled by them, in order."""
        self.frames = np.concatenate([self.frames, fit_frames(np.asarray(video), self.resolution, self.fit)])
        self.count += len(video)
        actions = []
        while self.next_start + self.window <= self.count:
            self.pending.append((self.next_start, self.window))
            self.next_start += self.stride
            if len(self.pending) == self.batch_size:
                actions += self._run()
        # frames before the first waiting window, and before the last window (it may start at count - window), go
        keep_from = max(0, min(self.pending[0][0] if self.pending else self.next_start, self.count - self.window))
        self.frames, self.offset = self.frames[keep_from - self.offset :], keep_from
        return actions

    def _run(self) -> list[int]:
        clips = torch.stack(
            [
                to_model_input(self.frames[s - self.offset : s - self.offset + n], self.resolution)
                for s, n in self.pending
            ]
        ).to(self.device)  # (N, W, 3, H, W)
        ids = self.model.infer_actions(clips).cpu()  # (N, W-1)
        actions = []
        for (start, _), row in zip(self.pending, ids):
            actions += row[self.settled - start :].tolist()
            self.settled = start + len(row)
        self.pending = []
        return actions

    def finish(self) -> list[int]:
        """The ids of the remaining transitions (a last window ends at the last frame)."""
        if self.count < 2:
            raise ValueError(f"a video needs at least 2 frames for one action, got {self.count}")
        actions = self._run() if self.pending else []
        if self.settled < self.count - 1:
            length = min(self.window, self.count)
            self.pending = [(self.count - length, length)]
            actions += self._run()
        return actions


@torch.no_grad()
def infer_actions(
    model: LatentActionModel, video: np.ndarray, window: int | None = None, batch_size: int = 32, fit: str = DEFAULT_FIT
) -> list[int]:
    """Latent action ids (T-1 of them) for uint8 frames (T, H, W, 3) of any length and size, via overlapping
    windows; frames are fitted to the LAM's resolution by genie.models.pixels.fit_frames."""
    if len(video) < 2:
        raise ValueError(f"a video needs at least 2 frames for one action, got {len(video)}")
    stream = WindowedActions(model, window, batch_size, fit=fit)
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
    window: int | None = None,
    annotate_to: Path | None = None,
    fit: str = DEFAULT_FIT,
) -> dict:
    """{"path", "num_frames", "actions"} of one video, streamed a chunk at a time (memory does not grow
    with its length) and fitted to the LAM's resolution by `fit`; with `annotate_to`, the frames with their
    actions stamped are written as they settle."""
    stream = WindowedActions(model, window, fit=fit)
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
            actions += stream.push(frames)
            if writer is not None:
                waiting.append(frames)
                stamp(writer)
        if stream.count < 2:
            raise VideoError(f"{path}: only {stream.count} frame, at least 2 are needed for an action")
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
    window: int | None = None,
) -> dict:
    """Write {"model", "num_actions", "videos": [{"path", "num_frames", "actions"}]} to `out` as JSON.

    Unreadable videos are skipped with one line each; if any was skipped the command still writes the
    others, then fails with a one-line summary (non-zero exit).
    """
    ckpt = load_checkpoint(model_path)
    model = load_stage_model(model_path, "lam", LAMConfig, LatentActionModel, label="LAM", ckpt=ckpt)
    fit = recorded_fit(ckpt)  # frames of another aspect are fitted as the LAM's training frames were
    del ckpt
    if window is not None and not 2 <= window <= model.cfg.max_frames:
        raise VideoError(f"--window {window}: must be between 2 and the LAM's {model.cfg.max_frames} frames")
    annotate_to = Path(annotate) if annotate else None
    if annotate_to is not None and annotate_to.suffix.lower() not in (".mp4", ".gif", ".mkv", ".avi"):
        raise VideoError(f"--annotate {annotate_to}: give a .mp4 or .gif file name")
    results, failed = [], []
    for index, path in enumerate(videos):
        target = annotated_path(annotate_to, index, len(videos)) if annotate_to is not None else None
        try:
            results.append(video_actions(model, path, window, target, fit=fit))
        except VideoError as e:
            if len(videos) == 1:
                raise
            log.warning("skipping %s", e)
            failed.append({"path": str(path), "error": str(e)})
            continue
        if target is not None:
            log.info("annotated video: %s", target)
    report = {"model": str(model_path), "num_actions": model.cfg.num_actions, "videos": results}
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
