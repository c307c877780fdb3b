"""Holding up: a SIGKILLed run resumes, DDP on CPU trains, bad input gets a one-line error and loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch

from genie.cli import build_parser, main
from genie.config import TrainConfig
from genie.models.checkpoint import RunError, load_checkpoint
from genie.training.trainer import fit

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_CONFIG = str(ROOT / "configs" / "sprites" / "tokenizer.yaml")
TINY_TOKENIZER = [
    "model.dim=32",
    "model.enc_depth=1",
    "model.dec_depth=1",
    "model.num_heads=2",
    "model.num_codes=64",
    "model.code_dim=8",
    "data.seq_len=4",
    "data.batch_size=4",
    "data.num_workers=0",
    "data.max_val_clips=8",
    "train.val_every_steps=1000",
    "train.warmup_steps=2",
    "train.logger=csv",
]


def genie_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "genie.cli", *args]


def train_tokenizer_cmd(data: Path, run_dir: Path, *overrides: str) -> list[str]:
    return genie_cmd(
        "train",
        "tokenizer",
        "--config",
        TOKENIZER_CONFIG,
        "--data",
        str(data),
        "--run-dir",
        str(run_dir),
        *TINY_TOKENIZER,
        *overrides,
    )


def step_of(ckpt: Path) -> int:
    return int(load_checkpoint(ckpt)["global_step"])


def test_sigkilled_training_resumes_from_its_last_checkpoint(sprite_data, tmp_path):
    run_dir = tmp_path / "run"
    cmd = train_tokenizer_cmd(sprite_data, run_dir, "train.max_steps=400", "train.ckpt_every_steps=5")
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    last = run_dir / "checkpoints" / "last.ckpt"
    deadline = time.time() + 240

    def saved_step() -> int:  # the step last.ckpt holds, 0 while it is missing or half-written
        try:
            return step_of(last) if last.is_file() else 0
        except Exception:
            return 0

    # wait for the checkpoint this test reads, not for a file count (under load last.ckpt lagged the step files)
    while time.time() < deadline and proc.poll() is None and saved_step() < 10:
        time.sleep(0.5)
    assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    killed_at = step_of(last)
    assert killed_at >= 10
    state = load_checkpoint(last)
    assert state["optimizer_states"] and state["optimizer_states"][0]["state"], "optimizer state is checkpointed"

    done = subprocess.run(
        [*cmd[:-2], f"train.max_steps={killed_at + 10}", "train.ckpt_every_steps=5"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resuming" in done.stderr
    assert step_of(last) == killed_at + 10


def test_finished_run_is_checkpointed_at_its_last_step_and_skipped_when_run_again(sprite_data, tmp_path):
    run_dir = tmp_path / "run"
    # 7 steps with step checkpoints every 5: without a final save last.ckpt would stop at step 5
    cmd = train_tokenizer_cmd(sprite_data, run_dir, "train.max_steps=7", "train.ckpt_every_steps=5")
    assert subprocess.run(cmd, capture_output=True, text=True, timeout=300).returncode == 0
    last = run_dir / "checkpoints" / "last.ckpt"
    assert step_of(last) == 7
    before = last.stat().st_mtime_ns
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0 and "already trained to 7 steps" in again.stderr
    assert last.stat().st_mtime_ns == before


def test_ddp_on_cpu_with_two_processes_trains_and_checkpoint_loads(sprite_data, tmp_path):
    run_dir = tmp_path / "ddp"
    cmd = train_tokenizer_cmd(
        sprite_data,
        run_dir,
        "train.max_steps=6",
        "train.accelerator=cpu",
        "train.devices=2",
        "train.strategy=ddp",
        "train.ckpt_every_steps=3",
    )
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert step_of(run_dir / "checkpoints" / "last.ckpt") == 6
    from genie.models.tokenizer import load_tokenizer

    model = load_tokenizer(run_dir)
    assert model.num_codes == 64


def test_existing_run_with_another_model_config_is_refused_not_clobbered(sprite_data, tmp_path):
    run_dir = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "tokenizer",
                "--config",
                TOKENIZER_CONFIG,
                "--data",
                str(sprite_data),
                "--run-dir",
                str(run_dir),
                *TINY_TOKENIZER,
                "train.max_steps=2",
            ]
        )
        == 0
    )
    before = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    assert (
        main(
            [
                "train",
                "tokenizer",
                "--config",
                TOKENIZER_CONFIG,
                "--data",
                str(sprite_data),
                "--run-dir",
                str(run_dir),
                *TINY_TOKENIZER,
                "model.dim=48",
                "train.max_steps=2",
            ]
        )
        == 2
    )
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == before
    assert (
        main(
            [
                "train",
                "tokenizer",
                "--config",
                TOKENIZER_CONFIG,
                "--data",
                str(sprite_data),
                "--run-dir",
                str(run_dir),
                *TINY_TOKENIZER,
                "model.dim=48",
                "train.max_steps=2",
                "--overwrite",
            ]
        )
        == 0
    )


@pytest.mark.parametrize("case", ["missing", "empty", "only_corrupt", "too_short"])
def test_unusable_data_folder_gives_one_line_error(tmp_path, capsys, case):
    data = tmp_path / "data"
    if case != "missing":
        data.mkdir()
    if case == "only_corrupt":
        (data / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 not really a video")
        (data / "empty.mp4").write_bytes(b"")
    if case == "too_short":
        from genie.data import sprites

        sprites.generate(data, episodes=2, cfg=sprites.SpriteWorldConfig(frames=3), progress=False)
    code = main(
        [
            "train",
            "tokenizer",
            "--config",
            TOKENIZER_CONFIG,
            "--data",
            str(data),
            "--run-dir",
            str(tmp_path / "run"),
            *TINY_TOKENIZER,
        ]
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("genie: error:") and str(data) in err[-1]


def test_tampered_checkpoint_with_pickled_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    bad = tmp_path / "bad.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"stage": "tokenizer"}, "payload": Payload()}, bad)
    with pytest.raises(RunError, match="weights-only"):
        load_checkpoint(bad)
    assert not marker.exists()


@pytest.fixture
def trained_run(sprite_data, tmp_path):
    """A tokenizer run folder trained for 2 steps, and the command that resumes it (to 3 steps)."""
    run_dir = tmp_path / "run"
    args = [
        "train",
        "tokenizer",
        "--config",
        TOKENIZER_CONFIG,
        "--data",
        str(sprite_data),
        "--run-dir",
        str(run_dir),
        *TINY_TOKENIZER,
        "train.logger=none",
    ]
    assert main([*args, "train.max_steps=2"]) == 0
    return run_dir, [*args, "train.max_steps=3"]


def test_resume_loads_every_checkpoint_weights_only(trained_run, monkeypatch):
    run_dir, resume = trained_run
    loads = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **k: loads.append(k.get("weights_only")) or real_load(*a, **k))
    assert main(resume) == 0
    assert step_of(run_dir / "checkpoints" / "last.ckpt") == 3
    assert len(loads) >= 2 and all(w is True for w in loads), loads  # ours and Lightning's resume load


@pytest.mark.parametrize("kind", ["pickled_code", "foreign", "other_stage", "not_torch"])
def test_tampered_or_foreign_last_checkpoint_is_a_one_line_error_on_resume(trained_run, capfd, kind):
    run_dir, resume = trained_run
    last = run_dir / "checkpoints" / "last.ckpt"
    marker = run_dir / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    if kind == "pickled_code":
        torch.save({**load_checkpoint(last), "payload": Payload()}, last)
    elif kind == "foreign":
        torch.save({"weights": torch.zeros(3)}, last)
    elif kind == "other_stage":
        ckpt = load_checkpoint(last)
        ckpt["hyper_parameters"]["stage"] = "lam"
        torch.save(ckpt, last)
    else:
        last.write_bytes(b"not a checkpoint at all")
    capfd.readouterr()
    assert main(resume) == 2
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("genie: error:") and str(last) in err[0], err
    assert "weights_only=False" not in err[0] and "trust" not in err[0]
    assert "--overwrite" in err[0]
    assert "posix.system" in err[0] if kind == "pickled_code" else "refused" not in err[0]
    assert not marker.exists()


def test_wrong_stage_checkpoint_is_refused(sprite_data, tmp_path):
    run_dir = tmp_path / "tok"
    assert (
        main(
            [
                "train",
                "tokenizer",
                "--config",
                TOKENIZER_CONFIG,
                "--data",
                str(sprite_data),
                "--run-dir",
                str(run_dir),
                *TINY_TOKENIZER,
                "train.max_steps=1",
            ]
        )
        == 0
    )
    from genie.models.lam import load_lam

    with pytest.raises(RunError, match="tokenizer checkpoint, expected a lam"):
        load_lam(run_dir)


class _Diverging(L.LightningModule):
    """Loss turns NaN at step 3."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))
        self.steps_run = 0

    def training_step(self, batch, batch_idx):
        self.steps_run += 1
        loss = (self.w * batch[0]).pow(2).mean()
        return loss * float("nan") if self.global_step >= 3 else loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


class _Data(L.LightningDataModule):
    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(64, 2)), batch_size=4)


def test_nan_loss_stops_with_a_message_and_keeps_the_last_good_checkpoint(tmp_path):
    cfg = TrainConfig(
        max_steps=20,
        ckpt_every_steps=2,
        ckpt_every_minutes=0,
        logger="none",
        val_every_steps=1000,
        accelerator="cpu",
        devices=1,
    )
    with pytest.raises(FloatingPointError, match="last good checkpoint"):
        fit(_Diverging(), _Data(), cfg, tmp_path, None, name="nan", progress=False)
    good = load_checkpoint(tmp_path / "checkpoints" / "last.ckpt")
    assert good["global_step"] <= 3
    assert torch.isfinite(good["state_dict"]["w"]).all()


def test_nan_loss_stops_training_within_ten_steps_between_checkpoints(tmp_path):
    # the guard reads the device every 10 steps, not every step (no host sync a step)
    module = _Diverging()
    cfg = TrainConfig(
        max_steps=100,
        ckpt_every_steps=1000,
        ckpt_every_minutes=0,
        logger="none",
        val_every_steps=1000,
        accelerator="cpu",
        devices=1,
    )
    with pytest.raises(FloatingPointError, match="nan or inf at step 3"):
        fit(module, _Data(), cfg, tmp_path, None, name="nan", progress=False)
    assert module.steps_run <= 10
    assert not (tmp_path / "checkpoints" / "last.ckpt").exists()


@pytest.mark.parametrize(
    "env, zero",
    [
        ({}, True),
        ({"RANK": "1"}, False),
        ({"LOCAL_RANK": "1"}, False),
        ({"LOCAL_RANK": "0", "NODE_RANK": "1"}, False),
        ({"SLURM_PROCID": "3"}, False),
        ({"SLURM_PROCID": "0"}, True),
        ({"SLURM_PROCID": "0", "LOCAL_RANK": "1"}, False),
    ],
)
def test_only_the_launching_rank_may_delete_a_run_folder(monkeypatch, env, zero):
    # Lightning's launcher and torchrun set RANK / LOCAL_RANK in the other ranks; srun sets SLURM_PROCID only
    from genie.training.trainer import is_launch_rank_zero

    for name in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert is_launch_rank_zero() is zero


def test_only_the_launching_rank_writes_the_bundle(monkeypatch, tmp_path):
    # every DDP rank returns to `genie train dynamics` / `train all` after fit; only rank zero may write the bundle
    # (two writers raced on one temporary file and one rank failed after training had succeeded)
    from genie.training.pipeline import export_bundle

    monkeypatch.setenv("RANK", "1")
    out = tmp_path / "world_model.pt"
    assert export_bundle(None, out) == out  # returns before it reads the (here absent) run
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "env, rank",
    [({}, 0), ({"LOCAL_RANK": "2"}, 2), ({"SLURM_LOCALID": "3"}, 3), ({"LOCAL_RANK": "1", "SLURM_LOCALID": "3"}, 1)],
)
def test_local_rank_reads_the_launchers_variables(monkeypatch, env, rank):
    # one helper for the cache builds and the device the token cache is built on (srun sets SLURM_LOCALID only)
    from genie.data.ranks import local_rank

    for name in ("LOCAL_RANK", "SLURM_LOCALID"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert local_rank() == rank


def test_servers_bind_to_localhost_by_default():
    args = build_parser().parse_args(["play", "--model", "x.pt"])
    assert args.host == "127.0.0.1"


def test_clip_stream_continues_the_data_position_after_a_resume():
    import itertools

    from genie.data.clips import ClipStream

    batch = 3
    uninterrupted = list(itertools.islice(iter(ClipStream(10, batch, seed=1)), 8 * batch))
    resumed = list(itertools.islice(iter(ClipStream(10, batch, seed=1, start_step=5)), 3 * batch))
    assert resumed == uninterrupted[5 * batch :]
    # two ranks see disjoint halves of each global batch
    ranks = [list(itertools.islice(iter(ClipStream(10, batch, seed=1, rank=r, world_size=2)), batch)) for r in (0, 1)]
    assert ranks[0] + ranks[1] == uninterrupted[: 2 * batch]
