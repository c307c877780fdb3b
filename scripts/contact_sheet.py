"""Tile a few clips of a dataset folder into one PNG (one row per clip), as the training loader sees them.

    .venv/bin/python scripts/contact_sheet.py --data data/coinrun --out docs/images/coinrun_clips.png

Clips are spread evenly over the training split; each row's video, start frame and ground-truth
actions (named from dataset.json when there is one) are printed, to check motion against actions.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from genie.config import DataConfig
from genie.data.datamodule import VideoDataModule
from genie.data.video import contact_sheet, write_image


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="dataset folder")
    parser.add_argument("--out", required=True, help="PNG to write")
    parser.add_argument("--clips", type=int, default=6, help="rows")
    parser.add_argument("--seq-len", type=int, default=16, help="frames per row")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--scale", type=int, default=2, help="integer upscaling, so small frames stay visible")
    args = parser.parse_args()

    data = VideoDataModule(
        DataConfig(dir=args.data, seq_len=args.seq_len, resolution=args.resolution, batch_size=8, num_workers=0)
    )
    data.setup()
    clips = data.train_set
    picks = np.linspace(0, len(clips) - 1, min(args.clips, len(clips))).round().astype(int)
    info_file = Path(args.data) / "dataset.json"
    names = json.loads(info_file.read_text()).get("action_names") if info_file.is_file() else None
    rows = []
    for row, index in enumerate(picks):
        item = clips[int(index)]
        rows.append(item["video"].numpy())  # (T, H, W, 3)
        actions = item["actions"].tolist()
        labels = [names[a] if names and a >= 0 else str(a) for a in actions]
        print(
            f"row {row}: {clips.videos[int(item['video_index'])].path.name} "
            f"from frame {int(item['start'])}: {' '.join(labels)}"
        )
    sheet = contact_sheet(np.stack(rows))  # (N, T, H, W, 3) -> (H', W', 3)
    sheet = np.kron(sheet, np.ones((args.scale, args.scale, 1), dtype=np.uint8))
    write_image(args.out, sheet)
    print(f"wrote {args.out} ({sheet.shape[1]}x{sheet.shape[0]})")


if __name__ == "__main__":
    main()
