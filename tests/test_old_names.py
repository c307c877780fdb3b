"""Files written before issue 16's renames still load, with identical outputs: the tokenizer's `quantizer` is now
`vq` (the LAM's name), the LAM's `head` is now `to_pixels` (the tokenizer's name) and TokenizerConfig's `beta` is
now `vq_beta` (the LAM's name). Each test builds a tiny model, writes it the old way and loads it the new way.
(The shipped models/coinrun-cpu.pt is such a file: tests/test_coinrun.py.)"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import yaml
from tiny import tiny_lam, tiny_tokenizer, tiny_world

from genie.config import ConfigError, DataConfig, load_config, to_dict
from genie.models.dynamics import DynamicsConfig
from genie.models.lam import load_lam
from genie.models.tokenizer import load_tokenizer
from genie.models.world import WorldModel
from genie.training.dynamics_stage import DynamicsModule, DynamicsRunConfig
from genie.training.lam_stage import LAMRunConfig
from genie.training.tokenizer_stage import TokenizerModule, TokenizerRunConfig
from genie.training.trainer import prepare_run_dir

# what each model's submodules and config fields were called before: new -> old
OLD_SUBMODULES = {"tokenizer": {"vq": "quantizer"}, "lam": {"to_pixels": "head"}}
OLD_FIELDS = {"tokenizer": {"vq_beta": "beta"}, "lam": {}}
BETA = 0.4  # not the default: a field dropped on loading would come back as 0.25


def old_state(state: dict, model: str, prefix: str = "") -> dict:
    """`state` (a state dict) with `model`'s renamed submodules under their old names, keys under `prefix`."""
    out = {}
    for key, value in state.items():
        first, _, rest = key[len(prefix) :].partition(".")
        if key.startswith(prefix) and first in OLD_SUBMODULES[model]:
            key = prefix + OLD_SUBMODULES[model][first] + "." + rest
        out[key] = value
    return out


def old_config(config: dict, model: str) -> dict:
    """A model config dict with its renamed fields under their old names."""
    return {OLD_FIELDS[model].get(k, k): v for k, v in config.items()}


def test_the_old_names_are_gone_and_the_new_ones_shared():
    tokenizer, lam = tiny_tokenizer(), tiny_lam()
    for model in (tokenizer, lam):
        assert hasattr(model, "vq") and hasattr(model, "to_pixels") and model.vq.beta == 0.25
        keys = set(model.state_dict())
        assert not any(k.startswith(("quantizer.", "head.")) for k in keys)
    assert "vq_beta" in to_dict(tokenizer.cfg) and "beta" not in to_dict(tokenizer.cfg)


def test_a_bundle_written_with_the_old_names_loads_with_identical_outputs(tmp_path):
    torch.manual_seed(0)
    world = tiny_world(prompt=np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8))
    world.tokenizer.cfg.vq_beta = BETA
    new_path = world.save(tmp_path / "new.pt")
    bundle = torch.load(new_path, weights_only=True)
    for model in ("tokenizer", "lam"):
        bundle[model] = {
            "config": old_config(bundle[model]["config"], model),
            "state_dict": old_state(bundle[model]["state_dict"], model),
        }
    assert "quantizer.codebook" in bundle["tokenizer"]["state_dict"] and "head.weight" in bundle["lam"]["state_dict"]
    assert bundle["tokenizer"]["config"]["beta"] == BETA
    torch.save(bundle, tmp_path / "old.pt")

    new, old = WorldModel.load(new_path), WorldModel.load(tmp_path / "old.pt")
    assert old.tokenizer.cfg == new.tokenizer.cfg and old.tokenizer.cfg.vq_beta == old.tokenizer.vq.beta == BETA
    for name in ("tokenizer", "lam", "dynamics"):
        got, want = getattr(old, name).state_dict(), getattr(new, name).state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    frames = [w.reset(seed=1) for w in (new, old)]
    for action in (0, 3, 1, 2, 2):  # past the dynamics window: the context slides
        frames += [new.step(action), old.step(action)]
    for a, b in zip(frames[::2], frames[1::2]):
        np.testing.assert_array_equal(a, b)
    # and read back with the models' own loaders
    assert torch.equal(load_tokenizer(tmp_path / "old.pt").vq.codebook, new.tokenizer.vq.codebook)
    assert torch.equal(load_lam(tmp_path / "old.pt").to_pixels.weight, new.lam.to_pixels.weight)


@pytest.mark.parametrize("stage", ["tokenizer", "lam"])
def test_a_stage_checkpoint_written_with_the_old_names_loads_with_identical_outputs(stage, tmp_path):
    torch.manual_seed(0)
    model = (tiny_tokenizer(vq_beta=BETA) if stage == "tokenizer" else tiny_lam(vq_beta=BETA)).eval()
    with torch.no_grad():  # weights that differ from their initial values (the LAM's output layer starts at zero)
        model.to_pixels.weight.normal_(0, 0.02)
    # as Lightning writes one: the stage's module holds the model as `model`
    ckpt = {
        "hyper_parameters": {"stage": stage, "config": {"model": old_config(dataclasses.asdict(model.cfg), stage)}},
        "state_dict": old_state({f"model.{k}": v for k, v in model.state_dict().items()}, stage, "model."),
        "global_step": 10,
    }
    assert any(k.startswith(("model.quantizer.", "model.head.")) for k in ckpt["state_dict"])
    torch.save(ckpt, tmp_path / "old.ckpt")
    loaded = (load_tokenizer if stage == "tokenizer" else load_lam)(tmp_path / "old.ckpt")
    assert loaded.cfg == model.cfg and loaded.cfg.vq_beta == BETA
    video = torch.rand(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        for got, want in zip(loaded(video), model(video)):
            assert torch.equal(got, want)


def test_a_lightning_resume_reads_the_old_names_under_any_prefix():
    """Lightning resumes a run by loading the module's whole state dict: the tokenizer stage holds the model as
    `model.`, the dynamics stage holds the frozen tokenizer and LAM as `tokenizer.` and `lam.`."""
    torch.manual_seed(0)
    cfg = TokenizerRunConfig(data=DataConfig(resolution=32, seq_len=4), model=tiny_tokenizer().cfg)
    module = TokenizerModule(cfg)
    saved = old_state(module.state_dict(), "tokenizer", "model.")
    assert "model.quantizer.codebook" in saved
    torch.manual_seed(1)
    resumed = TokenizerModule(cfg)
    resumed.load_state_dict(saved)  # strict
    assert torch.equal(resumed.model.vq.codebook, module.model.vq.codebook)

    def dynamics_module(seed: int) -> DynamicsModule:
        torch.manual_seed(seed)
        tokenizer, lam = tiny_tokenizer(resolution=16), tiny_lam(resolution=16)
        return DynamicsModule(
            DynamicsRunConfig(
                data=DataConfig(resolution=16, seq_len=4), model=DynamicsConfig(dim=32, depth=1, num_heads=2)
            ),
            tokenizer,
            lam,
        )

    module = dynamics_module(0)
    saved = old_state(old_state(module.state_dict(), "tokenizer", "tokenizer."), "lam", "lam.")
    assert "tokenizer.quantizer.codebook" in saved and "lam.head.weight" in saved
    resumed = dynamics_module(1)
    resumed.load_state_dict(saved)
    want = module.state_dict()
    assert all(torch.equal(v, want[k]) for k, v in resumed.state_dict().items())


def test_config_files_and_run_folders_that_say_beta_still_load(tmp_path):
    path = tmp_path / "tokenizer.yaml"
    path.write_text(yaml.safe_dump({"model": {"beta": BETA, "dim": 64}}))
    assert load_config(TokenizerRunConfig, path).model.vq_beta == BETA
    assert load_config(TokenizerRunConfig, None, [f"model.beta={BETA}"]).model.vq_beta == BETA
    with pytest.raises(ConfigError, match="'model.beta' and 'model.vq_beta' are one setting") as info:
        load_config(TokenizerRunConfig, path, ["model.vq_beta=0.3"])
    assert "\n" not in str(info.value)

    # a run folder whose config.yaml was saved with the old name resumes; a different model config is refused
    cfg = load_config(TokenizerRunConfig, path, [f"run_dir={tmp_path / 'run'}"])
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    saved = to_dict(cfg)
    saved["model"] = old_config(saved["model"], "tokenizer")
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    assert prepare_run_dir(run_dir, cfg) == run_dir / "checkpoints" / "last.ckpt"
    assert "vq_beta" in yaml.safe_load((run_dir / "config.yaml").read_text())["model"]  # saved the new way now
    saved["model"]["beta"] = 0.3
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    with pytest.raises(RuntimeError, match="different model config"):
        prepare_run_dir(run_dir, cfg)


def test_a_run_folder_saved_before_a_model_field_was_added_still_resumes(tmp_path):
    # runs/coinrun-cpu/lam was saved before `encoder_input` existed: a field missing from the saved config takes
    # its default, so the run resumes; set to something other than the default, the config is different
    run_dir = tmp_path / "lam"
    cfg = load_config(LAMRunConfig, None, [f"run_dir={run_dir}"])
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"")
    saved = to_dict(cfg)
    del saved["model"]["encoder_input"]
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    assert prepare_run_dir(run_dir, cfg) == run_dir / "checkpoints" / "last.ckpt"
    (run_dir / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=False))
    other = load_config(LAMRunConfig, None, [f"run_dir={run_dir}", "model.encoder_input=diff+frame"])
    with pytest.raises(RuntimeError, match="different model config"):
        prepare_run_dir(run_dir, other)
