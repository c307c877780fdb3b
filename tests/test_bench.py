"""`genie bench` reports every speed figure docs/benchmarks.md names, and counts model FLOPs correctly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from tiny import tiny_dynamics, tiny_lam, tiny_tokenizer

from genie.bench import count_flops
from genie.cli import main
from genie.training.dynamics_stage import dynamics_loss
from genie.training.lam_stage import lam_loss
from genie.training.tokenizer_stage import tokenizer_loss

ROOT = Path(__file__).resolve().parents[1]


def test_flop_count_of_a_linear_layer_is_two_multiply_adds_per_weight_and_row():
    layer = torch.nn.Linear(64, 32)
    x = torch.randn(10, 64, requires_grad=True)
    assert count_flops(lambda: layer(x)) == 2 * 10 * 64 * 32
    # backward: gradients of the input and of the weight, each as large as the forward matmul
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * 10 * 64 * 32


@pytest.mark.slow
def test_bench_writes_train_play_and_decode_figures(sprite_data, tmp_path, capsys):
    out = tmp_path / "bench.json"
    assert (
        main(
            [
                "bench",
                "--config",
                str(ROOT / "configs" / "sprites" / "genie.yaml"),
                "--data",
                str(sprite_data),
                "--out",
                str(out),
                "--device",
                "cpu",
                "--batch-size",
                "2",
            ]
        )
        == 0
    )
    result = json.loads(out.read_text())
    assert result["device"].startswith("cpu") and result["dtype"] == "fp32"
    assert [row["stage"] for row in result["train"]] == ["tokenizer", "lam", "dynamics", "dynamics+encode"]
    for row in result["train"]:
        assert row["train_frames_per_s"] > 0 and row["gflops_per_step"] > 0 and row["params"] > 0
    dynamics, encode = result["train"][2:]
    # without the token cache the frozen encoders' forward passes are extra work in every step
    assert encode["gflops_per_step"] > dynamics["gflops_per_step"] and encode["params"] == dynamics["params"]
    assert [row["batch_size"] for row in result["play"]] == [1, 8]
    for row in result["play"]:
        assert row["play_fps"] > 0 and row["play_latency_ms"] > 0
        assert row["play_latency_p50_ms"] <= row["play_latency_max_ms"] and row["slide"] == row["window"] // 2
        # per generated frame: a batch of 8 frames takes 8 / play_fps seconds per step
        assert abs(row["play_fps"] * row["play_latency_ms"] / 1000 - row["batch_size"]) < 0.05 * row["batch_size"]
    assert result["data"]["decode_frames_per_s"] > 0 and result["data"]["frame_cache_frames_per_s"] > 0
    assert "frames/s" in capsys.readouterr().out


def test_training_losses_never_read_back_from_the_device():
    # On the meta device tensors have shapes but no values: any op that needs to read a value on the host
    # (boolean-mask indexing, bincount, .item(), int(tensor)) raises. On a GPU each of those would stall
    # every training step until the device catches up.
    from genie.metrics import code_perplexity

    video = torch.rand(2, 4, 3, 32, 32)
    tokenizer = tiny_tokenizer().train()
    lam = tiny_lam().train()
    for model in (tokenizer, lam):
        model(video)  # the quantiser reads its step counter from the device once, after construction or a load
        model.to("meta")
        loss, terms = (
            tokenizer_loss(model, video.to("meta")) if model is tokenizer else lam_loss(model, video.to("meta"))
        )
        loss.backward()
        if model is lam:
            assert code_perplexity(terms["ids"], 8).shape == ()
    dynamics = tiny_dynamics()
    dynamics.to("meta").train()
    loss, stats = dynamics_loss(
        dynamics,
        torch.zeros(2, 4, 64, dtype=torch.long, device="meta"),
        torch.zeros(2, 3, dtype=torch.long, device="meta"),
    )
    loss.backward()
    assert loss.shape == () and stats["masked_acc"].shape == ()


@pytest.mark.slow
def test_compiled_training_losses_compile_once_not_every_step():
    # torch.compile specialises on Python values it reads; a counter that changes every step (as the
    # quantiser's restart schedule does) must stay outside the compiled graph or every step recompiles
    import torch._dynamo

    video = torch.rand(2, 4, 3, 32, 32)
    tokenizer = tiny_tokenizer(restart_every=5).train()
    lam = tiny_lam().train()
    dynamics = tiny_dynamics().train()
    ids, actions = torch.randint(0, 64, (2, 4, 64)), torch.randint(0, 8, (2, 3))
    losses = {
        "tokenizer": lambda: tokenizer_loss(tokenizer, video)[0],
        "lam": lambda: lam_loss(lam, video)[0],
        "dynamics": lambda: dynamics_loss(dynamics, ids, actions)[0],
    }
    for loss_fn in losses.values():
        torch._dynamo.reset()
        step = torch.compile(loss_fn, backend="eager")  # dynamo's tracing and guards, without code generation
        for _ in range(2):
            step().backward()
        with torch._dynamo.config.patch(error_on_recompile=True):
            for _ in range(12):  # past two dead-code restart points of the tokenizer's quantiser
                step().backward()
    assert int(tokenizer.vq.calls) == 14
