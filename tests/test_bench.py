"""`genie bench` reports every speed figure DESIGN.md names, and counts model FLOPs correctly."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from genie.bench import count_flops
from genie.cli import main

ROOT = Path(__file__).resolve().parents[1]


def test_flop_count_of_a_linear_layer_is_two_multiply_adds_per_weight_and_row():
    layer = torch.nn.Linear(64, 32)
    x = torch.randn(10, 64, requires_grad=True)
    assert count_flops(lambda: layer(x)) == 2 * 10 * 64 * 32
    # backward: gradients of the input and of the weight, each as large as the forward matmul
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * 10 * 64 * 32


def test_bench_writes_train_play_and_decode_figures(sprite_data, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert main(["bench", "--config", str(ROOT / "configs" / "sprites" / "genie.yaml"), "--data", str(sprite_data),
                 "--out", str(out), "--device", "cpu", "--batch-size", "2"]) == 0
    result = json.loads(out.read_text())
    assert result["device"].startswith("cpu") and result["dtype"] == "fp32"
    assert [row["stage"] for row in result["train"]] == ["tokenizer", "lam", "dynamics"]
    for row in result["train"]:
        assert row["train_frames_per_s"] > 0 and row["gflops_per_step"] > 0 and row["params"] > 0
    assert [row["batch_size"] for row in result["play"]] == [1, 8]
    for row in result["play"]:
        assert row["play_fps"] > 0 and row["play_latency_ms"] > 0
        # per generated frame: a batch of 8 frames takes 8 / play_fps seconds per step
        assert abs(row["play_fps"] * row["play_latency_ms"] / 1000 - row["batch_size"]) < 0.05 * row["batch_size"]
    assert result["data"]["decode_frames_per_s"] > 0
    assert "frames/s" in capsys.readouterr().out
