"""The shipped CoinRun world (models/coinrun-cpu.pt, docs/coinrun.md): it loads, plays with named actions,
and scores on held-out levels as it did when it was shipped. Evaluation only: nothing trains here."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from genie import WorldModel
from genie.models.actionmap import ActionMap

BUNDLE = Path(__file__).resolve().parents[1] / "models" / "coinrun-cpu.pt"
# Bars under the shipped model's figures on 8 clips of 4 held-out episodes, measured for procgen seeds 7-10 (recorded
# with the lead-in) on the 2-core AMD EPYC at the bundle's sampling (2 MaskGIT steps, temperature 1; the bundle of
# 2026-12-07 trained on lead-in data, frame stride 2): recon_psnr 31.93-32.83 dB, rollout_psnr@1 16.8-19.7, @4
# 13.8-16.8, delta_t_psnr 3.29-4.81 dB, control_fidelity 0.056-0.417. docs/coinrun.md has the 64-clip figures.
RECON_BAR = 30.0
ROLLOUT1_BAR = 15.0
ROLLOUT4_BAR = 12.0
DELTA_T_BAR = 1.5
CONTROL_BAR = 0.03


@pytest.fixture(scope="module")
def world() -> WorldModel:
    return WorldModel.load(BUNDLE)


@pytest.fixture(scope="module")
def heldout(tmp_path_factory) -> Path:
    """Four CoinRun episodes of levels the shipped model never saw (seed 7; it trained on seed 0)."""
    pytest.importorskip("procgen", reason="the procgen extra (make install) generates CoinRun")
    from genie.data.gameplay import generate_procgen

    out = tmp_path_factory.mktemp("coinrun")
    generate_procgen(out, env="coinrun", episodes=4, seed=7, progress=False)
    return out


def test_the_shipped_bundle_is_small_and_records_its_training(world):
    assert BUNDLE.stat().st_size < 25 * 2**20
    assert len(world.meta["training"]["train_files"]) == 115, "the bundle lists the files it trained on"
    assert world.meta["action_names"][1] == "LEFT" and world.meta["action_names"][7] == "RIGHT"


def test_a_bundle_saved_under_the_old_weight_names_is_a_one_line_error(tmp_path):
    # the compatibility layer for issue 16's renames is gone (issue 24): the shipped bundle was re-saved under the
    # current names, and a file still using the old ones (the tokenizer's `quantizer`, now `vq`) is refused in
    # one line naming the file and the key
    from genie.models.checkpoint import RunError

    raw = torch.load(BUNDLE, map_location="cpu", weights_only=True)
    assert not any(k.startswith("quantizer.") for k in raw["tokenizer"]["state_dict"])
    state = raw["tokenizer"]["state_dict"]
    raw["tokenizer"]["state_dict"] = {k.replace("vq.", "quantizer.", 1): v for k, v in state.items()}
    torch.save(raw, tmp_path / "old.pt")
    with pytest.raises(RunError, match=r"old.pt: its tokenizer weights do not fit .*unexpected 'quantizer\.") as e:
        WorldModel.load(tmp_path / "old.pt")
    assert "\n" not in str(e.value)


def test_plays_with_named_actions(world):
    action_map = ActionMap.from_meta(world.meta)
    assert action_map is not None and action_map.labels >= 200  # learned from at least Genie's 200 labels
    keys = action_map.key_bindings()
    assert {"ArrowLeft", "ArrowRight"} <= set(keys), keys
    assert len({keys["ArrowLeft"], keys["ArrowRight"], keys[" "]}) == 3, keys  # the previous bundle: left == right
    first = world.reset(seed=0)
    frames = [world.step(action_map.code_for(name)) for name in ("right", "right", "left", "jump")]
    assert first.shape == frames[0].shape == (1, 64, 64, 3) and frames[0].dtype == np.uint8  # batch of 1
    assert all(0 < f.std() for f in frames), "a generated frame is blank"


def test_scores_on_held_out_levels_as_shipped(world, heldout):
    from genie.evaluate import evaluate

    metrics = evaluate(world, heldout, split="all", max_clips=8, rollout_frames_k=4, progress=False)
    assert metrics["split"] == "all"
    assert metrics["recon_psnr"] > RECON_BAR
    assert metrics["rollout_psnr@1"] > ROLLOUT1_BAR
    assert metrics["rollout_psnr@4"] > ROLLOUT4_BAR
    assert metrics["delta_t_psnr"] > DELTA_T_BAR  # the inferred latent actions beat random ones
    assert metrics["control_fidelity"] > CONTROL_BAR  # held keys move the level some of the way the game does


def test_a_dynamics_run_starts_from_the_bundles_dynamics_weights(tmp_path):
    # `init` fine-tunes: the stage's model holds the bundle's weights before its first step, the sampling settings
    # stay the config's, and another architecture is a one-line error naming the option to set
    from genie.config import ConfigError, DataConfig
    from genie.models.dynamics import DynamicsConfig, DynamicsModel
    from genie.models.tokenizer import load_tokenizer
    from genie.training.dynamics_stage import DynamicsModule, DynamicsRunConfig, check_same_tokenizer, start_from

    raw = torch.load(BUNDLE, map_location="cpu", weights_only=True)["dynamics"]
    model = DynamicsConfig(**{**raw["config"], "temperature": 0.0})
    data = DataConfig(resolution=64, seq_len=8)
    cfg = DynamicsRunConfig(tokenizer=str(BUNDLE), lam=str(BUNDLE), init=str(BUNDLE), model=model, data=data)
    module = DynamicsModule(cfg)
    for name, weight in module.model.state_dict().items():
        assert torch.equal(weight, raw["state_dict"][name]), name
    assert module.model.cfg.temperature == 0.0
    scratch = DynamicsRunConfig(tokenizer=str(BUNDLE), lam=str(BUNDLE), model=model, data=cfg.data)
    weight = DynamicsModule(scratch).model.state_dict()["token_embed.weight"]
    assert not torch.equal(weight, raw["state_dict"]["token_embed.weight"]), "without init: fresh weights"

    other = DynamicsModel(DynamicsConfig(**{**raw["config"], "dim": 64, "num_heads": 2}))
    with pytest.raises(
        ConfigError, match=r"coinrun-cpu.pt: .*another architecture; set model.dim=128 model.num_heads=4"
    ):
        start_from(other, BUNDLE)
    shorter = DynamicsModel(DynamicsConfig(**{**raw["config"], "max_frames": 4}))
    with pytest.raises(ConfigError, match=r"another architecture; set data.seq_len=8$"):  # a field the data decides
        start_from(shorter, BUNDLE)
    tokenizer = load_tokenizer(BUNDLE)
    check_same_tokenizer(BUNDLE, tokenizer)  # the bundle's own tokenizer: its ids are the dynamics model's
    with torch.no_grad():
        next(iter(tokenizer.parameters())).add_(0.01)
    with pytest.raises(ConfigError, match=r"coinrun-cpu.pt: its dynamics model was trained on another tokenizer"):
        check_same_tokenizer(BUNDLE, tokenizer)
    # a dynamics training checkpoint holds its frozen tokenizer under `tokenizer.`: checked the same way
    tokens = torch.load(BUNDLE, map_location="cpu", weights_only=True)["tokenizer"]["state_dict"]
    ckpt = tmp_path / "dynamics.ckpt"
    torch.save({"state_dict": {f"tokenizer.{k}": v for k, v in tokens.items()}}, ckpt)
    check_same_tokenizer(ckpt, load_tokenizer(BUNDLE))
    with pytest.raises(ConfigError, match=r"dynamics.ckpt: its dynamics model was trained on another tokenizer"):
        check_same_tokenizer(ckpt, tokenizer)
