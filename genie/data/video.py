"""Reading and writing videos and images as uint8 arrays of shape (T, H, W, 3).

Reading keeps every readable frame and never holds a whole video at its own size:
- decord reads a file when it can read all of it (fast random access for training clips);
- PyAV reads what decord cannot: codecs decord's ffmpeg lacks (AV1), rotation metadata (phones write
  it; frames come out upright), animated GIFs, and files whose tail is damaged (the frames before the
  damage are kept, the rest dropped);
- Pillow reads images (EXIF orientation applied, 16-bit scaled to 8) and folders of numbered images
  (`frame_0001.png`, `frame_0002.png`, ...), which are videos too.
`iter_video` decodes in chunks of at most CHUNK_BYTES and fits each chunk to the model's size at once
(`fit_frames`: crop, pad or resize to another aspect ratio), so memory follows the chunk and the output
size, not the length or size of the file.

Videos are written as H.264 in RGB (`libx264rgb`, CRF 0): lossless, so decoded frames equal the
written ones bit for bit, which keeps generated datasets and their action sidecars exact.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from genie.models.resolution import DEFAULT_FIT

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mkv", ".webm", ".mov", ".gif")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
CHUNK_BYTES = 32 * 2**20  # decoded frames (at the file's own size) held at once while streaming
FIX = "re-encode it (e.g. `ffmpeg -i IN -c:v libx264 -pix_fmt yuv420p OUT.mp4`) or remove it"


class VideoError(RuntimeError):
    """A video that cannot be read or written; the message names the file."""


def first_line(error: Exception | None) -> str:
    """An exception as a short phrase: its first line (PyAV's strerror, without the file name it repeats)."""
    text = (getattr(error, "strerror", None) or str(error)).strip()
    return text.splitlines()[0][:160] if text else type(error).__name__


# ------------------------------------------------------------------------------------------ writing


class VideoWriter:
    """Write uint8 frames (N, H, W, 3) to .mp4/.mkv/.avi (H.264) a chunk at a time; .gif is written on close."""

    def __init__(self, path: str | Path, fps: int = 10, lossless: bool = True):
        self.path, self.fps, self.lossless = Path(path), fps, lossless
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._gif: list[np.ndarray] | None = [] if self.path.suffix.lower() == ".gif" else None
        self._container = self._stream = None

    def write(self, frames: np.ndarray) -> None:
        """Append uint8 frames (T, H, W, 3). Raises VideoError for another dtype or shape."""
        frames = np.asarray(frames)
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise VideoError(
                f"{self.path}: expected uint8 frames of shape (T, H, W, 3), got {frames.dtype} {frames.shape}"
            )
        if self._gif is not None:  # Pillow writes a GIF in one go
            self._gif.extend(frames)
            return
        import av  # lazy: not needed for training

        height, width = frames.shape[1:3]
        if not self.lossless and (height % 2 or width % 2):  # yuv420p (the lossy fallback) needs even sizes
            frames = np.pad(frames, ((0, 0), (0, height % 2), (0, width % 2), (0, 0)), mode="edge")
            height, width = frames.shape[1:3]
        if self._container is None:
            self._container = av.open(str(self.path), mode="w")
            codec, pix_fmt, crf = ("libx264rgb", "rgb24", "0") if self.lossless else ("libx264", "yuv420p", "18")
            self._stream = self._container.add_stream(codec, rate=self.fps)
            self._stream.pix_fmt = pix_fmt
            self._stream.options = {"crf": crf, "preset": "veryfast"}
            self._stream.width, self._stream.height = width, height
        for frame in frames:
            for packet in self._stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")):
                self._container.mux(packet)

    def close(self) -> Path:
        """Finish the file (flush the encoder, or write the GIF); returns its path. Safe to call twice."""
        if self._gif is not None:
            if self._gif:
                write_gif(self.path, np.stack(self._gif), self.fps)
            self._gif = None
        elif self._container is not None:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
            self._container = None
        return self.path

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_video(path: str | Path, frames: np.ndarray, fps: int = 10, lossless: bool = True) -> Path:
    """Write uint8 frames (T, H, W, 3) to .mp4/.mkv/.avi (H.264) or .gif; returns the path."""
    with VideoWriter(path, fps, lossless) as writer:
        writer.write(frames)
    return writer.path


def write_gif(path: str | Path, frames: np.ndarray, fps: int = 10) -> Path:
    """Write uint8 frames (T, H, W, 3) to `path` as a looping GIF at `fps` frames a second; returns the path."""
    from PIL import Image

    path = Path(path)
    images = [Image.fromarray(f) for f in frames]
    images[0].save(path, save_all=True, append_images=images[1:], duration=int(1000 / fps), loop=0)
    return path


def write_image(path: str | Path, image: np.ndarray) -> Path:
    """Write one uint8 image (H, W, 3) to `path` (format from the suffix), creating the folder; returns the path."""
    from PIL import Image

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path)
    return path


# ------------------------------------------------------------------------------------------- frames


def image_to_array(image) -> np.ndarray:
    """A Pillow image as uint8 RGB (H, W, 3): EXIF orientation applied, 16- and 32-bit modes scaled, not clipped."""
    from PIL import ImageOps

    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit PNGs (grayscale) open as I;16 or I with values 0..65535: convert("RGB") would clip them at 255
        gray = (np.asarray(image, dtype=np.float64) / 257.0).round().clip(0, 255).astype(np.uint8)
        return np.repeat(gray[..., None], 3, axis=-1)
    if image.mode == "F":
        gray = np.asarray(image, dtype=np.float64)
        top = 1.0 if gray.max() <= 1.0 else 255.0  # float images hold 0..1 or 0..255
        return np.repeat((gray / top * 255).round().clip(0, 255).astype(np.uint8)[..., None], 3, axis=-1)
    return np.asarray(image.convert("RGB"))


def read_image(path: str | Path, resolution=None, fit: str = DEFAULT_FIT) -> np.ndarray:
    """Load an image as uint8 (H, W, 3), upright (EXIF orientation), fitted to `resolution` (int or (h, w)) if
    asked, by `fit_frames`."""
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as image:
            array = image_to_array(image)
    except FileNotFoundError:
        raise VideoError(f"{path}: no such file") from None
    except Exception as e:
        raise VideoError(f"{path}: cannot read image ({first_line(e)}); re-save it as PNG or JPEG") from None
    from genie.models.pixels import fit_frames  # lazy: torch, which `genie data` (writing videos) does not need

    return fit_frames(array[None], resolution, fit)[0] if resolution else array


_NUMBER = re.compile(r"(\d+)(?!.*\d)")  # the last number in a file name


def numbered_images(folder: str | Path) -> list[Path] | None:
    """The frames of a folder of numbered images (`frame_0001.png`, ...) in number order, or None when the
    folder is not one: it needs at least two images, every one of them with a number in its name."""
    folder = Path(folder)
    if not folder.is_dir():
        return None
    images = [
        p
        for p in folder.iterdir()
        if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file() and not p.name.startswith(".")
    ]
    if len(images) < 2 or not all(_NUMBER.search(p.stem) for p in images):
        return None
    return sorted(images, key=lambda p: (int(_NUMBER.search(p.stem).group(1)), p.name))


# ------------------------------------------------------------------------------------------ readers


class DecordReader:
    """decord: random access by frame index; used only for files it reads to their last frame."""

    name = "decord"

    def __init__(self, path: Path):
        import decord

        decord.logging.set_level(decord.logging.QUIET)  # its ffmpeg's log lines are not ours to print
        self.path = path
        self._reader = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
        self.num_frames = len(self._reader)

    def get_batch(self, indices) -> np.ndarray:
        """Frames `indices` (ints) -> uint8 (len(indices), H, W, 3)."""
        return self._reader.get_batch(list(indices)).asnumpy()

    def iter_frames(self, chunk: int, stop: int | None = None) -> Iterator[np.ndarray]:
        """The frames 0..stop-1 (all when None) in order, as uint8 (<=chunk, H, W, 3) arrays."""
        stop = self.num_frames if stop is None else min(stop, self.num_frames)
        for start in range(0, stop, chunk):
            yield self.get_batch(range(start, min(stop, start + chunk)))


class PyAVReader:
    """PyAV: every codec of its ffmpeg, rotation applied, GIFs; decoding stops at the first damaged packet.

    Random access seeks to the keyframe before a frame (by its presentation time) and decodes forward;
    a read that continues where the last one stopped decodes on without seeking.
    """

    name = "pyav"

    def __init__(self, path: Path, num_frames: int | None = None):
        import av

        self.path = path
        self._container = av.open(str(path))
        if not self._container.streams.video:
            self._container.close()
            raise VideoError(f"{path}: no video stream (an audio file?); give a video file")
        self._stream = self._container.streams.video[0]
        self._stream.thread_count = 1
        self.damaged = False  # set when decoding stopped at a damaged packet before the end of the file
        self._pts: list[int] | None = None
        self._frames: Iterator | None = None  # (index, frame) generator positioned at self._next
        self._next = 0
        self.num_frames = num_frames or int(self._stream.frames or 0) or None  # the container's count until counted
        self.rotation = 0  # counter-clockwise degrees that make frames upright (the display matrix)
        first = next(self._decode_from_start(), None)
        if first is None:
            raise VideoError(f"{path}: no frame of this video can be decoded; {FIX}")
        self.rotation = int(round((first[1].rotation or 0) / 90)) * 90 % 360
        self._frames, self._next = None, 0

    def _decode_from_start(self) -> Iterator:
        self._container.seek(0)
        return self._decode(0)

    def _decode(self, index: int | None) -> Iterator:
        """(index, frame) pairs from the current position; `index` is the first one's, None to take it from its pts."""
        try:
            for frame in self._container.decode(self._stream):
                if index is None:
                    index = bisect.bisect_left(self._pts, frame.pts) if frame.pts is not None else 0
                yield index, frame
                index += 1
        except Exception:  # a damaged packet: the frames before it are what the file holds
            self.damaged = True

    def _timestamps(self) -> list[int]:
        """Presentation times of every frame, read from the packets (no decoding)."""
        if self._pts is None:
            pts = []
            try:
                self._container.seek(0)
                for packet in self._container.demux(self._stream):
                    if packet.pts is not None and packet.size:
                        pts.append(packet.pts)
            except Exception:
                pass
            self._pts = sorted(pts)
            self._frames = None
        return self._pts

    def _position(self, index: int, from_start: bool = False) -> None:
        """Make the frame generator yield `index` next (or the frames before it)."""
        if not from_start and self._frames is not None and self._next <= index <= self._next + 32:
            return
        pts = self._timestamps()
        if not from_start and 0 < index < len(pts):
            self._container.seek(pts[index], stream=self._stream, backward=True)
            self._frames = self._decode(None)
        else:
            self._frames = self._decode_from_start()
        self._next = 0

    def _frame_at(self, index: int) -> np.ndarray | None:
        for from_start in (False, True):
            self._position(index, from_start)
            for i, frame in self._frames:
                self._next = i + 1
                if i == index:
                    return self._to_array(frame)
                if i > index:  # the seek landed after the frame asked for: decode from the start instead
                    break
            else:
                break  # the readable frames ended before it
        self._frames = None
        return None

    def _to_array(self, frame) -> np.ndarray:
        array = frame.to_ndarray(format="rgb24")
        return np.rot90(array, k=self.rotation // 90) if self.rotation else array

    def get_batch(self, indices) -> np.ndarray:
        """Frames `indices` (ints) -> uint8 (len(indices), H, W, 3). Raises VideoError for a frame that cannot
        be decoded."""
        frames = []
        for index in indices:
            frame = self._frame_at(int(index))
            if frame is None:
                raise VideoError(f"{self.path}: frame {index} cannot be decoded (the file holds fewer readable frames)")
            frames.append(frame)
        return np.stack(frames)

    def iter_frames(self, chunk: int, stop: int | None = None) -> Iterator[np.ndarray]:
        """Every readable frame in order, `chunk` at a time; stops early (setting `damaged`) at a damaged packet."""
        frames = []
        self._frames = None
        for i, frame in self._decode_from_start():
            if stop is not None and i >= stop:
                break
            frames.append(self._to_array(frame))
            if len(frames) == chunk:
                yield np.stack(frames)
                frames = []
        if frames:
            yield np.stack(frames)

    def count_frames(self) -> int:
        """Decode the whole file once: the number of readable frames (sets `damaged` if it stopped early)."""
        self.num_frames = sum(1 for _ in self._decode_from_start())
        self._frames = None
        return self.num_frames

    @property
    def declared_frames(self) -> int:
        """The frame count the container declares (0 when it declares none); may differ from the decodable count."""
        return int(self._stream.frames or 0)


class ImageFolderReader:
    """A folder of numbered images as a video: every image resized to the first one's size."""

    name = "images"

    def __init__(self, path: Path):
        self.path = path
        self.files = numbered_images(path) or []
        if not self.files:
            raise VideoError(f"{path}: not a folder of numbered images (frame_0001.png, frame_0002.png, ...)")
        self.num_frames = len(self.files)
        self.height, self.width = read_image(self.files[0]).shape[:2]

    def _image(self, index: int) -> np.ndarray:
        image = read_image(self.files[index])
        if image.shape[:2] != (self.height, self.width):
            from PIL import Image

            image = np.asarray(Image.fromarray(image).resize((self.width, self.height), Image.BILINEAR))
        return image

    def get_batch(self, indices) -> np.ndarray:
        """Images `indices` (ints) of the folder, in name order -> uint8 (len(indices), H, W, 3)."""
        return np.stack([self._image(int(i)) for i in indices])

    def iter_frames(self, chunk: int, stop: int | None = None) -> Iterator[np.ndarray]:
        """The images 0..stop-1 (all when None) in order, as uint8 (<=chunk, H, W, 3) arrays."""
        stop = self.num_frames if stop is None else min(stop, self.num_frames)
        for start in range(0, stop, chunk):
            yield self.get_batch(range(start, min(stop, start + chunk)))


def _missing_mp4_index(path: Path) -> bool:
    """True for an .mp4/.mov whose top-level boxes hold media data (mdat) but no index (moov): a recording
    cut off or damaged before it was finished, which no decoder can read."""
    if path.suffix.lower() not in (".mp4", ".mov", ".m4v"):
        return False
    seen, size = set(), path.stat().st_size
    with open(path, "rb") as f:
        offset = 0
        while offset + 8 <= size and len(seen) < 64:
            f.seek(offset)
            header = f.read(16)
            box_size, kind = int.from_bytes(header[:4], "big"), header[4:8]
            if box_size == 1 and len(header) == 16:
                box_size = int.from_bytes(header[8:16], "big")
            if not kind.isalpha() or box_size < 8:
                break
            seen.add(kind)
            offset += box_size
    return b"mdat" in seen and b"moov" not in seen


def open_video(path: str | Path, reader: str | None = None, num_frames: int | None = None, sequential: bool = False):
    """A reader (DecordReader, PyAVReader or ImageFolderReader) of a video file or a folder of numbered images.

    `reader` names the one to use (as `probe_video` chose it); by default decord when it reads the file to
    its last frame and no rotation is set, PyAV otherwise; `sequential` (reading front to back) takes PyAV
    whenever it opens the file. A file neither can read is a one-line VideoError.
    """
    path = Path(path)
    if path.is_dir():
        return ImageFolderReader(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such file")
    if reader == "decord":
        return DecordReader(path)
    if reader == "pyav":
        return PyAVReader(path, num_frames)
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: empty file (0 bytes); remove it")
    pyav_error = None
    try:
        fallback = PyAVReader(path)
    except VideoError:
        raise
    except Exception as e:
        fallback, pyav_error = None, e
    # decord's ffmpeg is older than PyAV's: a file PyAV cannot open is not tried again (decord would log to stderr)
    if not sequential and path.suffix.lower() != ".gif" and fallback is not None and fallback.rotation == 0:
        try:
            decord_reader = DecordReader(path)
            if decord_reader.num_frames > 0:
                decord_reader.get_batch([decord_reader.num_frames - 1])  # a damaged tail fails here
                return decord_reader
        except Exception:
            pass
    if fallback is not None:
        return fallback
    if _missing_mp4_index(path):
        raise VideoError(
            f"{path}: cannot decode: the file has no index (moov box), so it was cut off or damaged "
            f"before it was finished; no frame can be located without it: remove it"
        )
    raise VideoError(f"{path}: cannot decode video ({first_line(pyav_error)}); {FIX}")


def probe_video(path: str | Path) -> dict:
    """What training needs to know of a video: {"num_frames", "height", "width", "reader"}, plus
    "declared_frames" when a damaged tail left fewer readable frames than the file claims ("damaged": True).

    PyAV files are decoded once here to count their readable frames; decord files are checked at their last frame.
    """
    path = Path(path)
    video = open_video(path)
    info = {"reader": video.name}
    if isinstance(video, PyAVReader):
        info["num_frames"] = video.count_frames()
        if video.damaged:
            info["damaged"] = True
            if video.declared_frames > info["num_frames"]:
                info["declared_frames"] = video.declared_frames
    else:
        info["num_frames"] = video.num_frames
    if info["num_frames"] == 0:
        raise VideoError(f"{path}: video has no frames")
    height, width = video.get_batch([0]).shape[1:3]
    return {**info, "height": int(height), "width": int(width)}


def iter_video(
    path: str | Path,
    resolution=None,
    max_frames: int | None = None,
    progress: bool = False,
    reader=None,
    fit: str = DEFAULT_FIT,
) -> Iterator[np.ndarray]:
    """The frames of a video (or image folder) in order, as uint8 chunks (N, h, w, 3): each chunk is decoded
    (at most CHUNK_BYTES at the file's size) and fitted to `resolution` (int or (h, w); None keeps the file's
    size) at once by `fit_frames`. A damaged tail ends the stream with a warning; a tqdm bar shows progress on
    long files when `progress` is set."""
    import logging

    from tqdm import tqdm

    from genie.models.pixels import fit_frames  # lazy: torch, which `genie data` (writing videos) does not need

    # PyAV, not decord, for reading front to back: the same pixels, and in constant memory (decord's batches,
    # interleaved with LAM batches, left the heap growing with the video: 1.7 -> 3.5 GB over a 60 s 1080p file)
    video = reader or open_video(path, sequential=True)
    first = video.get_batch([0])
    chunk = max(1, CHUNK_BYTES // first[0].nbytes)
    total = video.num_frames if max_frames is None else min(max_frames, video.num_frames or max_frames)
    count = 0
    with tqdm(
        total=total or None,
        desc=Path(path).name,
        unit="frame",
        leave=False,
        disable=not progress or (total is not None and total < 300),
    ) as bar:
        try:
            for frames in video.iter_frames(chunk, stop=max_frames):
                count += len(frames)
                bar.update(len(frames))
                yield fit_frames(frames, resolution, fit) if resolution else frames
        except VideoError:
            raise
        except Exception as e:  # decord raises bare DECORDError/RuntimeError
            raise VideoError(f"{path}: cannot decode frame {count} ({first_line(e)}); {FIX}") from None
    if getattr(video, "damaged", False):
        logging.getLogger(__name__).warning(
            "%s: damaged after frame %d: using the %d readable frames", path, count, count
        )


def read_video(
    path: str | Path,
    resolution=None,
    max_frames: int | None = None,
    last: int | None = None,
    progress: bool = False,
    fit: str = DEFAULT_FIT,
) -> np.ndarray:
    """Decode a video (its first `max_frames`, or its `last` frames) to uint8 (T, H, W, 3), fitted to
    `resolution` (int or (h, w)) by `fit_frames` if asked.

    Decoded a chunk at a time and resized at once: memory is the output plus one chunk.
    """
    kept, held = [], 0
    for frames in iter_video(path, resolution, max_frames, progress, fit=fit):
        kept.append(frames)
        held += len(frames)
        while last is not None and held - len(kept[0]) >= last:  # only the chunks the last frames need
            held -= len(kept.pop(0))
    if not kept:
        raise VideoError(f"{path}: video has no frames")
    frames = np.concatenate(kept)
    return frames[-last:] if last is not None else frames


def read_frames(
    path: str | Path, resolution=None, max_frames: int | None = None, last: int | None = None, fit: str = DEFAULT_FIT
) -> np.ndarray:
    """A video, a folder of numbered images or a single image, as uint8 (T, H, W, 3), fitted to `resolution`
    (int or (h, w)) by `fit_frames` if asked."""
    path = Path(path)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return read_image(path, resolution, fit)[None]
    if path.is_dir() and numbered_images(path) is None:
        raise VideoError(
            f"{path}: a folder, but not one of numbered images (frame_0001.png, ...); give a video or image file"
        )
    return read_video(path, resolution, max_frames, last, progress=True, fit=fit)


def contact_sheet(clips: np.ndarray, pad: int = 2) -> np.ndarray:
    """Tile clips (N, T, H, W, 3) into one image: one row per clip, one column per frame."""
    n, t, h, w, c = clips.shape
    sheet = np.full((n * (h + pad) + pad, t * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i in range(n):
        for j in range(t):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            sheet[y : y + h, x : x + w] = clips[i, j]
    return sheet
