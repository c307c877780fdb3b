"""Cache folders built once and reused (the token cache, the frame cache): a folder is finished when its
meta.json, written last, matches the key of what it was built from."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path

META_FILE = "meta.json"


def read_meta(cache_dir: Path) -> dict | None:
    """The cache folder's meta.json as a dict, or None when it is missing or not valid JSON."""
    try:
        return json.loads((cache_dir / META_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def matches(cache_dir: Path, key: dict) -> bool:
    """True when `cache_dir`'s meta.json holds every entry of `key` with the same value (the cache is current)."""
    meta = read_meta(cache_dir)
    return meta is not None and all(meta.get(k) == v for k, v in key.items())


def videos_digest(videos) -> str:
    """A hash of the videos' paths, sizes and modification times (VideoInfo list): changes when any file does."""
    stats = []
    for video in videos:
        stat = video.path.stat()
        stats.append([str(video.path.resolve()), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(stats).encode()).hexdigest()


def tmp_dir(cache_dir: Path) -> Path:
    """A fresh build folder beside `cache_dir`, after removing those that killed builds on this host left behind."""
    host = socket.gethostname()
    for old in cache_dir.parent.glob(f"{cache_dir.name}.tmp-{host}-*"):
        try:
            pid = int(old.name.rsplit("-", 1)[1])
        except ValueError:
            continue
        if not _alive(pid):
            shutil.rmtree(old, ignore_errors=True)
    tmp = cache_dir.with_name(f"{cache_dir.name}.tmp-{host}-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish(tmp: Path, cache_dir: Path, key: dict) -> None:
    """Move a finished build (meta.json written) into place; when several builders finish at once, the first wins.
    A stale cache is renamed aside before it is deleted, so a reader never sees it half gone."""
    if not matches(cache_dir, key):
        if cache_dir.exists():
            aside = cache_dir.with_name(f"{cache_dir.name}.stale-{socket.gethostname()}-{os.getpid()}")
            try:
                os.replace(cache_dir, aside)
                shutil.rmtree(aside, ignore_errors=True)
            except OSError:
                pass
        try:
            os.replace(tmp, cache_dir)
        except OSError:
            if not matches(cache_dir, key):
                raise
    shutil.rmtree(tmp, ignore_errors=True)


def wait_for(cache_dir: Path, key: dict, what: str, wait_seconds: float) -> Path:
    """Wait for local rank 0 to finish building the cache in `cache_dir`."""
    deadline = time.monotonic() + wait_seconds
    while not matches(cache_dir, key):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{cache_dir}: local rank 0 did not finish the {what} in {wait_seconds:.0f} s")
        time.sleep(2)
    return cache_dir
