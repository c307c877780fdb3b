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
    assert load_config(RunConfig, None, ["extra.sizes=9"]).extra.sizes == [9]  # one item


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.max_steps=many", "config key 'train.max_steps' expects int, got 'many'"),
        ("train.max_steps=1.5", "config key 'train.max_steps' expects int, got 1.5"),
        ("train.lr=fast", "config key 'train.lr' expects float"),
        ("train.compile=maybe", "config key 'train.compile' expects true/false"),
        ("extra.sizes=1,x", "config key 'extra.sizes' expects int"),
        ("extra.sizes={a: 1}", "config key 'extra.sizes' expects a list"),
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
    # unprefixed train.* reaches every stage too; a stage's own prefix wins
    _, configs = stage_configs(GENIE_YAML, ["train.seed=3", "lam.train.seed=5", "train.max_steps=7"])
    assert {stage: cfg.train.seed for stage, cfg in configs.items()} == {"tokenizer": 3, "lam": 5, "dynamics": 3}
    assert all(cfg.train.max_steps == 7 for cfg in configs.values())


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


# ------------------------------------------------------------------ jsonargparse: help from the field docstrings


def _config_classes():
    from genie.training.pipeline import STAGES, PipelineConfig

    return [*(cls for cls, _ in STAGES.values()), PipelineConfig]


@pytest.mark.parametrize("cls", _config_classes(), ids=lambda cls: cls.__name__)
def test_every_config_field_has_a_docstring_the_help_shows(cls):
    from genie.config import config_parser

    fields = [a for a in config_parser(cls)._actions if a.help != "==SUPPRESS==" and a.dest != "help"]
    assert len(fields) >= len(dataclasses.fields(cls))
    undocumented = [a.dest for a in fields if not a.help]
    assert not undocumented, f"fields without a docstring: {undocumented}"


def test_train_stage_help_lists_each_field_with_its_docstring_and_default(capsys):
    assert main(["train", "tokenizer", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # the formatter wraps lines
    assert "--config" in out and "--print-config" in out  # the command's own options
    assert "--model.dim DIM transformer width (type: int, default: 256)" in out
    assert "--data.seq_len SEQ_LEN frames per clip (type: int, default: 16)" in out
    assert "revive the codes that the freshly initialised encoder never picks" in out  # a multi-line docstring
    assert "--l1_weight" in out and "--train.max_steps" in out
    assert "--data CONFIG" not in out  # jsonargparse's per-group config file option is not offered


def test_train_all_help_lists_the_pipeline_fields(capsys):
    assert main(["train", "all", "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "--data_dir DATA_DIR when set, every stage reads this dataset folder" in out
    assert "tokenizer.train.max_steps=400" in out


def test_dotted_options_are_overrides_too(tmp_path, monkeypatch):
    import genie.training.trainer

    seen = []
    monkeypatch.setattr(
        genie.training.trainer, "train_stage", lambda task, cfg, **kw: seen.append(cfg) or Path(cfg.run_dir)
    )
    args = ["--config", str(TOKENIZER_YAML), "--model.dim", "40", "--train.max_steps=1e3", "--data.resolution", "32x48"]
    assert main(["train", "tokenizer", *args, "--run-dir", str(tmp_path / "run"), "--l1_weight", "0.5"]) == 0
    (cfg,) = seen
    assert (cfg.model.dim, cfg.train.max_steps, cfg.data.resolution, cfg.l1_weight) == (40, 1000, (32, 48), 0.5)
    assert cfg.model.resolution == (32, 48) and cfg.run_dir == str(tmp_path / "run")


def test_print_config_prints_the_resolved_config_without_training(tmp_path, capsys, monkeypatch):
    import genie.training.trainer
    from genie.training.tokenizer_stage import TokenizerRunConfig

    monkeypatch.setattr(genie.training.trainer, "train_stage", lambda *a, **kw: pytest.fail("trained"))
    args = ["train", "tokenizer", "--config", str(TOKENIZER_YAML), "model.dim=40", "--print-config"]
    assert main([*args, "--run-dir", str(tmp_path / "run")]) == 0
    printed = write(tmp_path / "printed.yaml", capsys.readouterr().out)
    cfg = load_config(TokenizerRunConfig, printed)
    assert cfg == load_config(TokenizerRunConfig, TOKENIZER_YAML, ["model.dim=40", f"run_dir={tmp_path / 'run'}"])
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "tokenizer", "--config", str(TOKENIZER_YAML), "--model.depht", "2"], "'model.depht'"),
        (["train", "tokenizer", "--config", str(TOKENIZER_YAML), "--model.dim"], "unrecognized arguments: --model.dim"),
        (["train", "tokenizer", "--config", str(TOKENIZER_YAML), "--train.lr", "fast"], "'train.lr' expects float"),
        (["train", "tokenizer"], "--config FILE is required"),
        (["train"], "choose the stage to train"),
        (["train", "tokeniser", "--config", str(TOKENIZER_YAML)], "invalid choice: 'tokeniser'"),
        (["eval", "--model", "m.pt"], "the following arguments are required: --data, --out"),
    ],
)
def test_command_line_mistakes_are_one_line_errors(tmp_path, capsys, args, message):
    if args[0] == "train":
        args = [*args, "--run-dir", str(tmp_path / "run")]
    try:
        code = main(args)
    except SystemExit as exited:  # argparse's own errors exit, in one line (genie.cli._Parser)
        code = exited.code
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("genie: error:") and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "run").exists()


def test_a_config_file_with_a_value_of_the_wrong_type_is_a_one_line_error(tmp_path, capsys):
    config = write(tmp_path / "c.yaml", TOKENIZER_YAML.read_text() + "l1_weight: heavy\n")
    assert main(["train", "tokenizer", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "genie: error: config key 'l1_weight' expects float, got 'heavy'", err


def test_the_parsed_config_is_built_by_jsonargparse_over_the_dataclasses():
    from genie.config import config_parser

    parser = config_parser(RunConfig)
    namespace = parser.instantiate(parser.parse_object({"train": {"lr": 1e-3}, "extra": {"sizes": [3]}}))
    assert isinstance(namespace["train"], TrainConfig) and namespace["train"].lr == 1e-3
    assert namespace["extra"].sizes == [3] and namespace["data"] == DataConfig()
    assert load_config(RunConfig, None, ["train.lr=1e-3", "extra.sizes=3"]) == RunConfig(
        train=TrainConfig(lr=1e-3), extra=Extra(sizes=[3])
    )


@pytest.mark.parametrize("stage", ["tokenizer", "lam", "dynamics"])
def test_a_model_field_the_user_set_to_its_default_is_refused_not_overwritten(stage):
    """Through load_config the loader knows which keys the user named: model.max_frames=16 is the default value,
    but set, so against data.seq_len=20 it is refused rather than silently replaced."""
    from genie.training.pipeline import STAGES

    cls = STAGES[stage][0]
    with pytest.raises(ConfigError, match="model.max_frames") as info:
        load_config(cls, None, ["data.seq_len=20", "model.max_frames=16"])
    assert "\n" not in str(info.value)
    assert load_config(cls, None, ["data.seq_len=20"]).model.max_frames == 20  # left out: derived


def test_the_dynamics_model_follows_the_trained_tokenizer_and_lam_or_refuses():
    from types import SimpleNamespace

    from genie.models.dynamics import DynamicsConfig
    from genie.training.dynamics_stage import DynamicsModule, DynamicsRunConfig

    tokenizer, lam = SimpleNamespace(num_codes=16, grid=(2, 4)), SimpleNamespace(cfg=SimpleNamespace(num_actions=4))
    small = {"dim": 32, "depth": 1, "num_heads": 2}
    module = DynamicsModule(DynamicsRunConfig(model=DynamicsConfig(**small)), tokenizer, lam)
    assert (module.cfg.model.num_codes, module.cfg.model.grid, module.cfg.model.num_actions) == (16, (2, 4), 4)
    for field, value, source in (("num_codes", 512, "the tokenizer's num_codes is 16"), ("num_actions", 6, "is 4")):
        cfg = DynamicsRunConfig(model=DynamicsConfig(**small, **{field: value}))
        with pytest.raises(ConfigError, match=f"model.{field} is {value} but ") as info:
            DynamicsModule(cfg, tokenizer, lam)
        assert source in str(info.value) and "\n" not in str(info.value)
