"""Reading any real video folder (genie/data/video.py): every readable frame kept, upright, in bounded memory.

Each input is made here, small, of a kind that public bug reports of decord, PyAV and video loaders
describe: phone rotation metadata, AV1, animated GIFs, folders of numbered images, damaged tails, EXIF
orientation, 16-bit PNGs.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from tiny import tiny_lam

from genie.cli import main
from genie.data import video as video_mod
from genie.data.clips import VideoClips, discover_videos, usable_videos
from genie.data.video import (
    VideoError,
    iter_video,
    probe_video,
    read_frames,
    read_video,
    write_gif,
    write_image,
)
from genie.inference import ActionStream, infer_actions, to_model_input, video_actions
from genie.models.lam import LatentActionModel


def frames_with_marker(count: int = 12, height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    """Random frames with a white top-left corner, so an orientation is visible."""
    frames = np.random.default_rng(seed).integers(0, 200, (count, height, width, 3), dtype=np.uint8)
    frames[:, :6, :6] = 255
    return frames


def encode(
    path: Path,
    frames: np.ndarray,
    codec: str = "libx264rgb",
    pix_fmt: str = "rgb24",
    rotation: int | None = None,
    options: dict | None = None,
    container_options: dict | None = None,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options=container_options or {}) as container:
        stream = container.add_stream(codec, rate=10)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], pix_fmt
        stream.options = options if options is not None else ({"crf": "0"} if codec.startswith("libx264") else {})
        if rotation is not None:
            stream.set_display_rotation(rotation)  # counter-clockwise degrees, as ffmpeg's display matrix
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def damage_tail(path: Path, fraction: float = 0.4) -> Path:
    """Overwrite the last `fraction` of the file's bytes with noise."""
    data = bytearray(path.read_bytes())
    cut = int(len(data) * (1 - fraction))
    data[cut:] = np.random.default_rng(1).integers(0, 256, len(data) - cut, dtype=np.uint8).tobytes()
    path.write_bytes(bytes(data))
    return path


def random_lam_checkpoint(path: Path, resolution: int = 16, max_frames: int = 6) -> Path:
    torch.manual_seed(0)
    model = tiny_lam(resolution, max_frames=max_frames)
    torch.save(
        {
            "hyper_parameters": {"stage": "lam", "config": {"model": dataclasses.asdict(model.cfg)}},
            "state_dict": {f"model.{k}": v for k, v in model.state_dict().items()},
            "global_step": 0,
        },
        path,
    )
    return path


# ------------------------------------------------------------------------------------ rotation, codecs


def test_phone_rotation_metadata_gives_upright_frames(tmp_path):
    frames = frames_with_marker()
    # phones write "rotate=90": shown turned a quarter clockwise (a display matrix of -90 degrees counter-clockwise)
    video = encode(tmp_path / "phone.mp4", frames, rotation=-90)
    read = read_video(video)
    upright = np.rot90(frames, k=-1, axes=(1, 2))  # a quarter turn clockwise: the marker moves to the top right
    assert read.shape == (12, 32, 24, 3)
    np.testing.assert_array_equal(read, upright)
    assert probe_video(video) == {"reader": "pyav", "num_frames": 12, "height": 32, "width": 24}


def test_av1_video_is_read(tmp_path):
    encoders = [c for c in ("libsvtav1", "libaom-av1") if c in av.codecs_available]
    if not encoders:
        pytest.skip("no AV1 encoder in this PyAV build")
    frames = frames_with_marker(height=48, width=64)
    video = encode(
        tmp_path / "clip.mp4",
        frames,
        codec=encoders[0],
        pix_fmt="yuv420p",
        options={"preset": "12"} if encoders[0] == "libsvtav1" else {"cpu-used": "8"},
    )
    read = read_video(video)
    assert read.shape == frames.shape
    assert np.abs(read.astype(int) - frames).mean() < 40  # lossy, but the same pictures
    assert probe_video(video)["reader"] == "pyav"


def test_animated_gif_is_a_video(tmp_path):
    frames = frames_with_marker()
    gif = write_gif(tmp_path / "anim.gif", frames)
    read = read_video(gif)
    assert read.shape == frames.shape and read[:, :6, :6].min() > 240  # palette colours: near, not equal
    assert read_frames(gif, resolution=16, last=2).shape == (2, 16, 16, 3)  # a rollout prompt: its last frames
    clips = VideoClips(usable_videos(tmp_path, min_frames=4, progress=False), seq_len=4, resolution=16, clip_step=3)
    assert len(clips) == 3 and clips[2]["video"].shape == (4, 16, 16, 3)


def test_folder_of_numbered_images_is_a_video_in_training_and_prompts(tmp_path):
    frames = frames_with_marker(count=11, height=32, width=32)
    root = tmp_path / "data"
    for i, frame in enumerate(frames):  # frame_9 before frame_10: by number, not by name
        write_image(root / "episode" / f"frame_{i}.png", frame)
    write_image(root / "notes" / "cover.png", frames[0])  # one image without a number: not a video
    assert discover_videos(root) == [root / "episode"]
    np.testing.assert_array_equal(read_frames(root / "episode"), frames)
    (info,) = usable_videos(root, min_frames=4, progress=False)
    assert (info.num_frames, info.reader) == (11, "images")
    clip = VideoClips([info], seq_len=4, resolution=32, clip_step=7)[1]
    np.testing.assert_array_equal(clip["video"].numpy(), frames[7:11])


def test_random_access_equals_sequential_reading_for_every_reader(tmp_path):
    frames = frames_with_marker(count=40, height=32, width=32)
    for i, frame in enumerate(frames):
        write_image(tmp_path / "images" / f"{i:04d}.png", frame)
    videos = [
        encode(tmp_path / "plain.mp4", frames, options={"crf": "0", "g": "8"}),
        encode(tmp_path / "rotated.mp4", frames, rotation=180, options={"crf": "0", "g": "8"}),
        write_gif(tmp_path / "anim.gif", frames),
        tmp_path / "images",
    ]
    order = [39, 3, 0, 17, 18, 19, 8, 30, 2]
    for path in videos:
        info = probe_video(path)
        reader = video_mod.open_video(path, info["reader"], info["num_frames"])
        np.testing.assert_array_equal(reader.get_batch(order), read_video(path)[order], err_msg=str(path))


# ------------------------------------------------------------------------------------- damaged files


def test_damaged_tail_keeps_the_readable_prefix_and_is_reported(tmp_path, caplog):
    frames = frames_with_marker(count=60, height=48, width=64)
    # index at the front (as web videos are): the frames before the damage can still be located
    damaged = damage_tail(
        encode(
            tmp_path / "data" / "cut.mp4",
            frames,
            codec="libx264",
            pix_fmt="yuv420p",
            options={"g": "10"},
            container_options={"movflags": "+faststart"},
        )
    )
    encode(tmp_path / "data" / "good.mp4", frames[:20])
    info = probe_video(damaged)
    assert info["reader"] == "pyav" and info["damaged"] and info["declared_frames"] == 60
    assert 10 <= info["num_frames"] < 60
    with caplog.at_level(logging.WARNING):
        videos = usable_videos(tmp_path / "data", min_frames=8, progress=False)
        read = read_video(damaged)
    assert len(read) == info["num_frames"]
    assert [v.path.name for v in videos] == ["cut.mp4", "good.mp4"]
    assert sum("shortened" in m and "cut.mp4" in m for m in caplog.messages) == 1
    assert any("skipped 0 of 2 videos, shortened 1" in m for m in caplog.messages)
    clips = VideoClips(videos[:1], seq_len=8, resolution=32)
    assert clips[len(clips) - 1]["video"].shape == (8, 32, 32, 3)  # the last clip inside the readable prefix


@pytest.mark.parametrize("kind", ["index_lost", "garbage", "empty", "audio_only"])
def test_unreadable_file_is_one_line_naming_the_file_and_the_fix(tmp_path, kind):
    path = tmp_path / "bad.mp4"
    if kind == "index_lost":  # the index (moov) is written last: damaging the tail loses every frame
        damage_tail(encode(path, frames_with_marker(count=30)))
    elif kind == "garbage":
        path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)
    elif kind == "empty":
        path.touch()
    else:
        with av.open(str(path), "w") as container:
            stream = container.add_stream("aac", rate=8000)
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), dtype=np.float32), format="fltp", layout="mono")
            frame.sample_rate = 8000
            for packet in [*stream.encode(frame), *stream.encode()]:
                container.mux(packet)
    with pytest.raises(VideoError) as error:
        read_video(path)
    message = str(error.value)
    assert message.startswith(str(path)) and "\n" not in message
    assert any(fix in message for fix in ("remove it", "re-encode", "give a video"))
    assert "github" not in message and "Check failed" not in message and "Errno" not in message


def test_cli_names_an_unreadable_prompt_in_one_line(tmp_path, capsys):
    lam = random_lam_checkpoint(tmp_path / "lam.ckpt")
    bad = damage_tail(encode(tmp_path / "cut.mp4", frames_with_marker(count=30)))
    assert main(["infer-actions", "--model", str(lam), str(bad), "--out", str(tmp_path / "a.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(bad) in err[0] and "remove it" in err[0]


# ---------------------------------------------------------------------------------------------- images


def test_jpeg_prompt_follows_exif_orientation(tmp_path):
    from PIL import Image

    frame = frames_with_marker(count=1, height=24, width=32)[0]
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation 6: shown turned a quarter clockwise
    Image.fromarray(frame).save(tmp_path / "photo.jpg", exif=exif, quality=95)
    image = read_frames(tmp_path / "photo.jpg")[0]
    assert image.shape == (32, 24, 3)
    assert image[:6, -6:].min() > 230 and image[:6, :6].max() < 240  # the white corner went to the top right


def test_16_bit_grayscale_png_is_scaled_not_saturated(tmp_path):
    from PIL import Image

    ramp = np.linspace(0, 65535, 64, dtype=np.uint16)[None].repeat(8, axis=0)  # (8, 64)
    Image.fromarray(ramp).save(tmp_path / "depth.png")
    image = read_frames(tmp_path / "depth.png")[0]
    assert image.shape == (8, 64, 3) and image.dtype == np.uint8
    np.testing.assert_array_equal(image[0, :, 0], np.round(ramp[0] / 257).astype(np.uint8))
    assert image[0, 32, 0] == 130  # mid-grey, where convert("RGB") gave 255


# --------------------------------------------------------------------------------- streaming, memory


def reference_actions(model: LatentActionModel, video: np.ndarray, window: int) -> list[int]:
    """Every window at once, as infer_actions computed it before it streamed."""
    n = len(video)
    window = min(window, n)
    stride = max(1, window // 2)
    starts = [0] if n <= window else [*range(0, n - window, stride), n - window]
    frames = to_model_input(video, model.cfg.resolution)
    ids = model.infer_actions(torch.stack([frames[s : s + window] for s in starts]))
    return [
        int(
            ids[
                next(k for k, s in enumerate(starts) if t + 1 < s + window),
                t - starts[next(k for k, s in enumerate(starts) if t + 1 < s + window)],
            ]
        )
        for t in range(n - 1)
    ]


@pytest.mark.parametrize("length", [2, 5, 6, 7, 23, 40])
def test_streamed_actions_equal_the_whole_video_windows(length):
    torch.manual_seed(0)
    model = tiny_lam(resolution=16, max_frames=6).eval()
    video = np.random.default_rng(length).integers(0, 256, (length, 16, 16, 3), dtype=np.uint8)
    expected = reference_actions(model, video, 6)
    assert infer_actions(model, video) == expected
    # each transition alone, as the encoder sees it: the codes of 2-frame clips
    frames = to_model_input(video, 16)
    alone = [int(model.infer_actions(frames[t : t + 2][None])[0, 0]) for t in range(length - 1)]
    assert expected == alone
    for chunk in (1, 4, 9):  # any chunking, and batches of windows smaller than the video
        stream = ActionStream(model, batch_size=2)
        got = []
        for s in range(0, length, chunk):
            got += stream.push(video[s : s + chunk])
            assert len(stream.frames) <= 2 * 5  # at most two windows of transitions wait
        assert got + stream.finish() == expected, chunk


@pytest.mark.parametrize("stride", [2, 3])
def test_streamed_actions_with_a_frame_stride_read_every_strideth_frame(stride):
    # a LAM trained on data.frame_stride S reads frames 0, S, 2S, ... of a stream, however it is chunked
    torch.manual_seed(0)
    model = tiny_lam(resolution=16, max_frames=6).eval()
    video = np.random.default_rng(stride).integers(0, 256, (29, 16, 16, 3), dtype=np.uint8)
    expected = infer_actions(model, video[::stride])
    assert len(expected) == (29 - 1) // stride
    for chunk in (1, 4, 5):
        stream = ActionStream(model, batch_size=2, frame_stride=stride)
        got = [a for s in range(0, 29, chunk) for a in stream.push(video[s : s + chunk])] + stream.finish()
        assert got == expected, chunk
    short = ActionStream(model, frame_stride=stride)
    short.push(video[:stride])  # one frame read: no transition yet
    with pytest.raises(ValueError, match=f"at least {stride + 1} frames"):
        short.finish()


def test_reading_memory_follows_the_chunk_not_the_video(tmp_path, monkeypatch):
    frames = np.random.default_rng(0).integers(0, 256, (8, 240, 320, 3), dtype=np.uint8)
    video = encode(
        tmp_path / "hd.mp4",
        np.concatenate([frames] * 12),
        codec="libx264",
        pix_fmt="yuv420p",
        options={"preset": "ultrafast"},
    )  # 96 frames, 22 MB decoded
    monkeypatch.setattr(video_mod, "CHUNK_BYTES", 2**20)  # 4 frames a chunk
    tracemalloc.start()
    try:
        count = sum(len(chunk) for chunk in iter_video(video, resolution=16))
        _, streamed = tracemalloc.get_traced_memory()
        tracemalloc.reset_peak()
        prompt = read_frames(video, resolution=16, last=3)
        _, prompt_peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 96 and prompt.shape == (3, 16, 16, 3)
    whole = 96 * 240 * 320 * 3
    assert streamed < whole / 5 and prompt_peak < whole / 5, (streamed, prompt_peak, whole)


def test_infer_actions_streams_gifs_rotated_and_image_folders(tmp_path):
    lam = random_lam_checkpoint(tmp_path / "lam.ckpt")
    frames = frames_with_marker(count=14)
    inputs = [write_gif(tmp_path / "anim.gif", frames), encode(tmp_path / "phone.mp4", frames, rotation=-90)]
    for i, frame in enumerate(frames):
        write_image(tmp_path / "shots" / f"shot_{i:03d}.jpg", frame)
    inputs.append(tmp_path / "shots")
    out, annotated = tmp_path / "actions.json", tmp_path / "annotated.mp4"
    assert (
        main(["infer-actions", "--model", str(lam), *map(str, inputs), "--out", str(out), "--annotate", str(annotated)])
        == 0
    )
    report = json.loads(out.read_text())
    assert [(v["num_frames"], len(v["actions"])) for v in report["videos"]] == [(14, 13)] * 3
    assert len(read_video(tmp_path / "annotated_001.mp4")) == 14  # every frame stamped, the last one "end"
    model = torch.load(lam, weights_only=True)
    assert report["num_actions"] == model["hyper_parameters"]["config"]["model"]["num_actions"]


def test_video_actions_match_the_whole_video_reading(tmp_path):
    from genie.models.lam import load_lam

    model = load_lam(random_lam_checkpoint(tmp_path / "lam.ckpt"))
    video = encode(tmp_path / "clip.mp4", frames_with_marker(count=33, height=40, width=40))
    streamed = video_actions(model, video)
    assert streamed["actions"] == reference_actions(model, read_video(video, resolution=16), 6)
