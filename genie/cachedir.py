"""Cache folders built once and reused (the token cache, the frame cache): a folder is finished when its
meta.json, written last, matches the key of what it was built from."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

META_FILE = "meta.json"


def read_meta(cache_dir: Path) -> dict | None:
    try:
        return json.loads((cache_dir / META_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def matches(cache_dir: Path, key: dict) -> bool:
    meta = read_meta(cache_dir)
    return meta is not None and all(meta.get(k) == v for k, v in key.items())


def publish(tmp: Path, cache_dir: Path, key: dict) -> None:
    """Move a finished build (meta.json written) into place; when several builders finish at once, the first wins."""
    if not matches(cache_dir, key):
        shutil.rmtree(cache_dir, ignore_errors=True)
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
