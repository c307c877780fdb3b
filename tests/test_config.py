"""Config parsing: dataclass defaults, then a YAML file, then dotted `key=value` overrides; every mistake a user
can make in them is one line naming the key, on the library and on the command line. No training here."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from genie.cli import main
from genie.config import ConfigError, DataConfig, TrainConfig, load_config, save_config
from genie.training.pipeline import stage_configs

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_YAML = ROOT / "configs" / "sprites" / "tokenizer.yaml"
GENIE_YAML = ROOT / "configs" / "sprites" / "genie.yaml"


@dataclasses.dataclass
class Extra:
    sizes: list[int] = dataclasses.field(default_factory=lambda: [1, 2])
    note: str | None = None
    anything: Any = None


@dataclasses.dataclass
class RunConfig:
    """A stage-like config: the shared data and train sections plus fields of other types."""

    run_dir: str = "runs/x"
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    extra: Extra = dataclasses.field(default_factory=Extra)


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_yaml_then_overrides_change_only_the_keys_they_name(tmp_path):
    config = write(tmp_path / "c.yaml", "run_dir: runs/a\ndata: {dir: some/videos, seq_len: 6}\ntrain:\n  lr: 2.0e-3\n")
    cfg = load_config(RunConfig, config, ["train.lr=5e-4", "data.batch_size=4"])
    assert cfg.run_dir == "runs/a" and cfg.data.dir == "some/videos" and cfg.data.seq_len == 6
    assert cfg.train.lr == 5e-4 and cfg.data.batch_size == 4  # the override wins over the file
    defaults = RunConfig()
    assert cfg.data.clip_step == defaults.data.clip_step and cfg.train.max_steps == defaults.train.max_steps
    assert load_config(RunConfig) == defaults  # no file, no overrides: the dataclass defaults


def test_an_empty_file_keeps_the_defaults_and_a_saved_config_loads_back(tmp_path):
    assert load_config(RunConfig, write(tmp_path / "empty.yaml", "")) == RunConfig()
    cfg = load_config(RunConfig, None, ["train.max_steps=7", "extra.sizes=3,4", "extra.note=hi", "data.dir=d"])
    save_config(cfg, tmp_path / "saved.yaml")
    assert load_config(RunConfig, tmp_path / "saved.yaml") == cfg


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("train.max_steps=1e3", "max_steps", 1000),  # scientific notation for an int field
        ("train.max_steps=200", "max_steps", 200),
        ("train.lr=1e-3", "lr", 1e-3),  # YAML 1.1 reads 1e-3 as a string; the float field converts it
        ("train.lr=3", "lr", 3.0),
        ("train.compile=true", "compile", True),
        ("train.compile=yes", "compile", True),
        ("train.compile=off", "compile", False),
        ("train.compile=0", "compile", False),
        ("train.logger=", "logger", ""),
        ("train.devices=[0, 1]", "devices", [0, 1]),  # an Any field keeps the YAML value
        ("train.devices=2", "devices", 2),
    ],
)
def test_override_values_are_yaml_scalars_coerced_to_the_field_type(override, key, expected):
    value = getattr(load_config(RunConfig, None, [override]).train, key)
    assert value == expected and type(value) is type(expected)


def test_list_and_optional_fields():
    cfg = load_config(RunConfig, None, ["extra.sizes=4,5,6", "extra.note=null"])
    assert cfg.extra.sizes == [4, 5, 6] and cfg.extra.note is None
    assert load_config(RunConfig, None, ["extra.sizes=[7, 8]"]).extra.sizes == [7, 8]
    assert load_config(RunConfig, None, ["extra.note=text"]).extra.note == "text"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.max_steps=many", "config key 'train.max_steps' expects int, got 'many'"),
        ("train.max_steps=1.5", "config key 'train.max_steps' expects int, got 1.5"),
        ("train.lr=fast", "config key 'train.lr' expects float"),
        ("train.compile=maybe", "config key 'train.compile' expects true/false"),
        ("extra.sizes=1,x", "config key 'extra.sizes' expects int"),
        ("data=videos", "config key 'data' must be a mapping"),
        ("train.max_step=10", "unknown config key 'train.max_step'"),
        ("trian.lr=1", "unknown config key 'trian'"),
        ("train.max_steps", "must look like key.sub=value"),
    ],
)
def test_a_bad_override_is_a_config_error_naming_the_key(override, message):
    with pytest.raises(ConfigError) as error:
        load_config(RunConfig, None, [override])
    assert message in str(error.value) and "\n" not in str(error.value)


def test_an_unknown_key_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"valid keys under 'train\.': .*max_steps"):
        load_config(RunConfig, None, ["train.max_step=10"])


def test_conflicting_overrides_are_refused():
    with pytest.raises(ConfigError, match="conflicts with another override of 'train'"):
        load_config(RunConfig, None, ["train=1", "train.lr=1"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (None, "not found"),
        ("train: {lr: [unclosed\n", "is not valid YAML"),
        ("- a\n- list\n", "must hold a mapping at the top level"),
        ("train: {max_steps: lots}\n", "config key 'train.max_steps' expects int"),
        ("data: {folder: x}\n", "unknown config key 'data.folder'"),
    ],
)
def test_a_bad_config_file_is_a_config_error(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    if text is not None:
        path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_config(RunConfig, path)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--config", str(TOKENIZER_YAML), "train.max_steps=many"], "'train.max_steps' expects int"),
        (["--config", str(TOKENIZER_YAML), "model.depht=2"], "unknown config key 'model.depht'"),
        (["--config", "no/such/config.yaml"], "config file no/such/config.yaml not found"),
        (["--config", str(TOKENIZER_YAML), "data.resolution=30"], "divisible by model.patch"),
    ],
)
def test_config_mistakes_on_the_command_line_are_one_line_errors(tmp_path, capsys, args, message):
    code = main(["train", "tokenizer", "--run-dir", str(tmp_path / "run"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.startswith("genie: error:") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()  # refused before anything was written


def test_command_line_overrides_before_or_after_options_reach_the_stage(tmp_path, monkeypatch):
    import genie.training.trainer

    seen = []
    monkeypatch.setattr(
        genie.training.trainer, "train_stage", lambda task, cfg, **kw: seen.append(cfg) or Path(cfg.run_dir)
    )
    data, run = str(tmp_path / "videos"), str(tmp_path / "run")
    assert (
        main(
            [
                "train",
                "tokenizer",
                "train.max_steps=7",
                "--config",
                str(TOKENIZER_YAML),
                "--data",
                data,
                "model.dim=48",
                "--run-dir",
                run,
                "train.lr=1e-4",
            ]
        )
        == 0
    )
    (cfg,) = seen
    assert (cfg.train.max_steps, cfg.model.dim, cfg.train.lr) == (7, 48, 1e-4)
    assert cfg.data.dir == data and cfg.run_dir == run  # --data and --run-dir are overrides of data.dir, run_dir
    assert cfg.train.warmup_steps == 50  # from the file


def test_an_override_without_equals_after_options_is_a_one_line_error(tmp_path, capsys):
    args = [
        "train",
        "tokenizer",
        "--config",
        str(TOKENIZER_YAML),
        "--run-dir",
        str(tmp_path / "run"),
        "train.max_steps",
    ]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("genie: error: unrecognized arguments: train.max_steps")
    assert "KEY=VALUE" in err
    assert not (tmp_path / "run").exists()


def test_train_all_routes_prefixed_overrides_to_their_stage():
    pipeline, configs = stage_configs(
        GENIE_YAML,
        ["tokenizer.train.max_steps=10", "lam.model.dim=32", "data.dir=/videos", "data.num_workers=0", "run_dir=/r"],
    )
    assert set(configs) == {"tokenizer", "lam", "dynamics"} and pipeline.run_dir == "/r"
    assert configs["tokenizer"].train.max_steps == 10 and configs["lam"].train.max_steps == 800  # lam.yaml's
    assert configs["lam"].model.dim == 32 and configs["tokenizer"].model.dim == 96
    for stage, cfg in configs.items():  # unprefixed data.* applies to every stage; each stage has its folder
        assert cfg.data.dir == "/videos" and cfg.data.num_workers == 0 and cfg.run_dir == f"/r/{stage}"
    assert (configs["dynamics"].tokenizer, configs["dynamics"].lam) == ("/r/tokenizer", "/r/lam")


def test_train_all_names_the_stage_of_a_bad_override():
    with pytest.raises(ConfigError, match=r"^lam stage: unknown config key 'model\.depht'"):
        stage_configs(GENIE_YAML, ["lam.model.depht=2"])


# ------------------------------------------------------------------ model fields derived from the data


@pytest.mark.parametrize(
    "stage, overrides, fields",
    [
        (
            "tokenizer",
            ["data.resolution=32", "model.resolution=48"],
            ("model.resolution is 48", "data.resolution is 32"),
        ),
        ("tokenizer", ["data.seq_len=8", "model.max_frames=4"], ("model.max_frames 4", "data.seq_len 8")),
        ("lam", ["data.resolution=32", "model.resolution=[16,32]"], ("model.resolution", "data.resolution is 32")),
        ("lam", ["data.seq_len=8", "model.max_frames=4"], ("model.max_frames is 4", "data.seq_len is 8")),
        ("dynamics", ["data.seq_len=8", "model.max_frames=4"], ("model.max_frames is 4", "data.seq_len is 8")),
    ],
)
def test_a_model_field_set_against_the_data_is_refused_not_overwritten(stage, overrides, fields):
    from genie.training.pipeline import STAGES

    with pytest.raises(ConfigError) as info:
        load_config(STAGES[stage][0], None, overrides)
    message = str(info.value)
    assert "\n" not in message and all(field in message for field in fields), message


@pytest.mark.parametrize("stage", ["tokenizer", "lam", "dynamics"])
def test_model_fields_left_at_their_defaults_or_equal_follow_the_data(stage):
    from genie.training.pipeline import STAGES

    cls = STAGES[stage][0]
    # the dynamics model has no patch: its grid is the tokenizer's
    patch = [] if stage == "dynamics" else ["model.patch=8"]
    cfg = load_config(cls, None, ["data.resolution=[32,48]", "data.seq_len=20", *patch])
    if stage != "dynamics":
        assert cfg.model.resolution == (32, 48)
    assert cfg.model.max_frames == 20
    same = load_config(cls, None, ["data.seq_len=6", "model.max_frames=6"])
    assert same.model.max_frames == 6
