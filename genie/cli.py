"""The `genie` command line: parses arguments and calls the library; no logic of its own.

Each subcommand imports its module inside its `_cmd_*` function, on purpose: `genie --help` and `genie data`
start without importing torch or Lightning.

`genie train` reads its config through genie.config (jsonargparse over the run config dataclasses): `--config
FILE`, then `KEY=VALUE` overrides (`--KEY VALUE` is the same override); `genie train <stage> --help` lists every
config field with its docstring and default, `--print-config` prints the resolved config without training.
Every user error is one line: argparse's own errors too (`_Parser.error`).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

# the stage names, spelled out here so `genie --help` need not import Lightning (genie.training.pipeline.STAGES
# maps each to its classes; tests/test_layers.py checks the two agree)
STAGE_NAMES = ("tokenizer", "lam", "dynamics")

# the options of `genie train` itself; any other `--KEY VALUE` on a train command line is a config override
TRAIN_FLAGS = ("--config", "--data", "--run-dir", "--overwrite", "--print-config", "--help")
OVERRIDE_HINT = "config overrides are KEY=VALUE, e.g. train.max_steps=100"


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line (the message and where the help is) instead of a usage block."""

    def error(self, message: str):
        self.exit(2, f"genie: error: {message} (see {self.prog} --help)\n")


def sprites_default(field: str):
    """A SpriteWorldConfig default, for `genie data sprites --help` (genie.data.sprites imports only numpy)."""
    from genie.data.sprites import SpriteWorldConfig

    return getattr(SpriteWorldConfig(), field)


def _cmd_pack(args: argparse.Namespace) -> None:
    from genie.config import DataConfig, load_yaml
    from genie.data.packed import PACK_FIELDS, pack
    from genie.models.resolution import canonical_resolution, check_fit, format_resolution

    data = DataConfig()
    section = (load_yaml(args.config).get("data") or {}) if args.config else {}
    value = {
        key: getattr(args, key) if getattr(args, key) is not None else section.get(key, getattr(data, key))
        for key in PACK_FIELDS
    }
    value["resolution"] = canonical_resolution(value["resolution"], "--resolution")
    value["fit"] = check_fit(value["fit"], "--fit")
    manifest = pack(args.src, args.out, num_workers=args.workers, overwrite=args.overwrite, **value)
    train, val = manifest["splits"]["train"], manifest["splits"]["val"]
    print(
        f"packed {train['clips']} train clips ({len(train['files'])} files) and {val['clips']} val clips "
        f"({len(val['files'])} files) of {value['seq_len']} frames at {format_resolution(value['resolution'])} "
        f"into {args.out} in {manifest['pack_seconds']:.0f} s; train with data.dir={args.out}"
    )


def _cmd_data(args: argparse.Namespace) -> None:
    if args.source == "sprites":
        from genie.data import sprites

        cfg = sprites.SpriteWorldConfig(
            size=args.size,
            width=args.width,
            frames=args.frames,
            noise=args.noise,
            background=args.background,
            speed=args.speed,
            player=args.player,
        )
        paths = sprites.generate(args.out, episodes=args.episodes, seed=args.seed, cfg=cfg, overwrite=args.overwrite)
    else:
        from genie.data import gameplay

        if args.source == "procgen":
            paths = gameplay.generate_procgen(
                args.out,
                env=args.env,
                episodes=args.episodes,
                seed=args.seed,
                max_frames=args.max_frames,
                lead_in=args.lead_in,
                overwrite=args.overwrite,
            )
        else:
            paths = gameplay.generate_atari(
                args.out,
                env=args.env,
                episodes=args.episodes,
                seed=args.seed,
                max_frames=args.max_frames,
                resolution=args.resolution,
                overwrite=args.overwrite,
            )
    print(f"wrote {len(paths)} episodes to {args.out}")


def config_flags_to_overrides(args: list[str]) -> list[str]:
    """The arguments of a train command with each config field given as an option, `--model.dim 128` or
    `--model.dim=128`, turned into its override `model.dim=128`. Options of `genie train` itself (and their
    abbreviations) are left alone; so is an option without its value (argparse reports it)."""
    out, i = [], 0
    while i < len(args):
        arg = args[i]
        name = arg[2:].split("=", 1)[0]
        is_field = re.fullmatch(r"[A-Za-z_][\w.]*", name) and not any(f.startswith("--" + name) for f in TRAIN_FLAGS)
        if arg.startswith("--") and is_field and "=" in arg:
            out.append(arg[2:])
        elif arg.startswith("--") and is_field and i + 1 < len(args) and not args[i + 1].startswith("--"):
            out.append(f"{name}={args[i + 1]}")
            i += 1
        else:
            out.append(arg)
        i += 1
    return out


def train_help(stage: str | None, text: str) -> str:
    """`genie train [STAGE] --help`: `text` (the command's options), then (with a stage) every config field of the
    stage, by section, with its docstring, type and default (genie.config.config_help)."""
    if stage is None:
        return text + "\n`genie train STAGE --help` lists the config fields of STAGE.\n"
    from genie.config import config_help
    from genie.training.pipeline import STAGES, PipelineConfig

    if stage == "all":
        return (
            f"{text}\nconfig fields of `genie train all` (its YAML file, e.g. configs/sprites/genie.yaml; override "
            "with KEY=VALUE or --KEY VALUE). A stage's own fields take the stage's name first, e.g. "
            "tokenizer.train.max_steps=400 (`genie train tokenizer --help` lists them); data.* and train.* "
            f"apply to every stage, e.g. data.num_workers=0 train.seed=1.\n\n{config_help(PipelineConfig)}"
        )
    return (
        f"{text}\nconfig fields of `genie train {stage}` (its YAML file sets them; override with KEY=VALUE, "
        f"e.g. model.dim=128, or --KEY VALUE, e.g. --model.dim 128):\n\n{config_help(STAGES[stage][0])}"
    )


def _cmd_train(args: argparse.Namespace) -> None:
    if args.help:
        print(train_help(args.stage, args.train_parser.format_help()), end="")
        return
    from genie.config import ConfigError

    if args.stage is None:
        raise ConfigError(f"choose the stage to train: {', '.join(STAGE_NAMES)} or all (see genie train --help)")
    if not args.config:
        example = "genie" if args.stage == "all" else args.stage
        raise ConfigError(
            f"--config FILE is required, e.g. --config configs/sprites/{example}.yaml "
            f"(see genie train {args.stage} --help)"
        )
    overrides = list(args.overrides)
    if args.data:
        overrides.append(f"data.dir={args.data}")
    if args.run_dir:
        overrides.append(f"run_dir={args.run_dir}")
    if args.stage == "all":
        from genie.training.pipeline import stage_configs, train_all

        if args.print_config:
            from genie.config import dump_config

            pipeline, configs = stage_configs(args.config, overrides)
            print(dump_config(pipeline), end="")
            for stage, cfg in configs.items():
                print(f"# --- {stage}\n{dump_config(cfg)}", end="")
            return
        bundle = train_all(args.config, overrides=overrides, overwrite=args.overwrite)
        print(f"world model bundle: {bundle}")
        return
    from genie.config import dump_config, load_config
    from genie.training.pipeline import STAGES
    from genie.training.trainer import train_stage

    run_config_cls, module_cls = STAGES[args.stage]
    cfg = load_config(run_config_cls, args.config, overrides)
    if args.print_config:
        print(dump_config(cfg), end="")
        return
    run_dir = train_stage(module_cls, cfg, overwrite=args.overwrite)
    print(f"{args.stage} trained: {run_dir}/checkpoints/last.ckpt")
    if args.stage == "dynamics":  # the last stage: the world is playable now, as after `genie train all`
        from genie.training.pipeline import export_bundle

        print(f"world model bundle: {export_bundle(cfg, Path(run_dir) / 'world_model.pt')}")


def _cmd_infer_actions(args: argparse.Namespace) -> None:
    from genie.inference import infer_actions_command

    infer_actions_command(args.model, args.videos, args.out, annotate=args.annotate)


def _cmd_rollout(args: argparse.Namespace) -> None:
    from genie.rollout import rollout_command

    rollout_command(args)


def _cmd_eval(args: argparse.Namespace) -> None:
    from genie.evaluate import eval_command

    eval_command(args)


def _cmd_play(args: argparse.Namespace) -> None:
    from genie.play import play_command

    play_command(args)


def _cmd_bench(args: argparse.Namespace) -> None:
    from genie.bench import bench_command

    bench_command(args)


def build_parser() -> argparse.ArgumentParser:
    """The `genie` argument parser: one subcommand per command, each importing its module only when it runs."""
    parser = _Parser(prog="genie", description="Turn unlabeled gameplay video into a playable world model.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging and full tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="generate a dataset folder of gameplay videos with action sidecars")
    data_sub = data.add_subparsers(dest="source", required=True)
    for source, help_text in (
        ("sprites", "the synthetic sprite world (5 known actions)"),
        ("procgen", "real Procgen gameplay (procgen2), random policy with action repeat"),
        ("atari", "real Atari gameplay (ale-py), random policy with action repeat"),
    ):
        p = data_sub.add_parser(source, help=help_text)
        p.add_argument("--out", required=True, help="output folder (must not already hold videos)")
        p.add_argument("--episodes", type=int, default=64 if source == "sprites" else 50)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--overwrite", action="store_true", help="replace the videos already in --out")
        if source == "sprites":
            p.add_argument("--size", type=int, default=32, help="frame side in pixels (the height, with --width)")
            p.add_argument(
                "--width",
                type=int,
                default=None,
                help="frame width in pixels, when not --size (e.g. --size 90 --width 160)",
            )
            p.add_argument("--frames", type=int, default=48, help="frames per episode")
            p.add_argument(
                "--noise",
                type=float,
                default=sprites_default("noise"),
                help="std of the background's per-pixel noise (0-255 levels); 0 for a smooth background",
            )
            p.add_argument(
                "--background",
                choices=("gradient", "flat"),
                default=sprites_default("background"),
                help="a smooth colour gradient per episode, or one of eight flat colours",
            )
            p.add_argument(
                "--speed",
                type=int,
                default=sprites_default("speed"),
                help="pixels the player moves a step (equal to the tokenizer's patch: moves of whole tokens)",
            )
            p.add_argument("--player", type=int, default=sprites_default("player"), help="player side in pixels")
        else:
            p.add_argument("--env", default="coinrun" if source == "procgen" else "Breakout")
            p.add_argument("--max-frames", type=int, default=500, help="longest episode kept, in frames")
        if source == "atari":
            p.add_argument("--resolution", type=int, default=64)
        if source == "procgen":
            p.add_argument(
                "--lead-in",
                dest="lead_in",
                type=int,
                help="at most this many unrecorded steps of the game's lead-in action before each level's recording "
                "(coinrun: RIGHT, 96, so recordings start away from the left wall; 0: none)",
            )
        p.set_defaults(func=_cmd_data)
    p = data_sub.add_parser(
        "pack",
        help="write the clips of a video folder as litdata shards (a local folder or s3://...), for training at scale",
    )
    p.add_argument("src", help="video folder (as data.dir)")
    p.add_argument("out", help="output folder or object-store URI (s3://bucket/prefix)")
    p.add_argument("--config", help="stage YAML whose data: section gives the cut (flags below override it)")
    p.add_argument("--seq-len", dest="seq_len", type=int, help="frames per clip (data.seq_len)")
    p.add_argument("--resolution", help="frame size, 64 or 90x160 (data.resolution)")
    p.add_argument("--fit", help="crop, pad or resize to the resolution (data.fit)")
    p.add_argument(
        "--frame-stride", dest="frame_stride", type=int, help="frames between clip frames (data.frame_stride)"
    )
    p.add_argument(
        "--clip-step", dest="clip_step", type=int, help="frames between training clip starts (data.clip_step)"
    )
    p.add_argument(
        "--val-fraction", dest="val_fraction", type=float, help="share of files held out (data.val_fraction)"
    )
    p.add_argument("--seed", type=int, help="split seed (data.seed)")
    p.add_argument("--workers", type=int, default=2, help="packing processes")
    p.add_argument("--overwrite", action="store_true", help="replace a finished pack at OUT")
    p.set_defaults(func=_cmd_pack)

    train = sub.add_parser(
        "train",
        help="train a stage (or all three) from a YAML config",
        add_help=False,  # its --help also lists the stage's config fields (train_help)
        usage="genie train {tokenizer,lam,dynamics,all} --config FILE [--data DIR] [--run-dir DIR] [--overwrite] "
        "[--print-config] [KEY=VALUE | --KEY VALUE ...]",
    )
    train.add_argument("stage", nargs="?", choices=(*STAGE_NAMES, "all"))
    train.add_argument("-h", "--help", action="store_true", help="this help, and the stage's config fields")
    train.add_argument("--config", help="YAML file, e.g. configs/sprites/tokenizer.yaml (required)")
    train.add_argument("--data", help="dataset folder (overrides data.dir)")
    train.add_argument("--run-dir", help="run folder (overrides run_dir)")
    train.add_argument("--overwrite", action="store_true", help="delete an existing run folder instead of resuming it")
    train.add_argument(
        "--print-config", action="store_true", help="print the resolved config (YAML) and exit without training"
    )
    train.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. train.max_steps=100 (or --train.max_steps 100)",
    )
    train.set_defaults(func=_cmd_train, train_parser=train)

    infer = sub.add_parser("infer-actions", help="latent action ids for each transition of each video")
    infer.add_argument("--model", required=True, help="LAM checkpoint, LAM run folder or world-model bundle")
    infer.add_argument("videos", nargs="+", metavar="VIDEO")
    infer.add_argument("--out", required=True, help="JSON file to write")
    infer.add_argument(
        "--annotate", help="also write this video (.mp4/.gif) with the inferred action stamped on each frame"
    )
    infer.set_defaults(func=_cmd_infer_actions)

    roll = sub.add_parser("rollout", help="generate frames from a prompt and a sequence of latent actions")
    roll.add_argument("--model", required=True, help="world-model bundle")
    roll.add_argument("--prompt", required=True, help="prompt video or image")
    how = roll.add_mutually_exclusive_group()
    how.add_argument(
        "--actions",
        help="comma-separated latent action ids, e.g. 0,3,3,1, or, for a model trained on labelled data, "
        "action names, e.g. right,right,jump",
    )
    how.add_argument("--random", type=int, metavar="N", help="N uniformly random actions")
    how.add_argument("--repeat", metavar="A:N", help="action A repeated N times")
    how.add_argument(
        "--compare", action="store_true", help="side by side with the real clip, using its inferred actions"
    )
    roll.add_argument("--prompt-frames", type=int, default=1, help="frames of the prompt video used as context")
    roll.add_argument("--out", required=True, help=".mp4 or .gif")
    roll.add_argument("--steps", type=int, default=None, help="MaskGIT steps per frame (default from the bundle)")
    roll.add_argument("--temperature", type=float, default=None)
    roll.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance weight on the latent action, 1 = none (default: the bundle's; "
        "for a model trained with model.action_dropout > 0)",
    )
    roll.add_argument(
        "--slide",
        type=int,
        default=None,
        help="frames dropped when the context window is full "
        "(default from the bundle: half the window; 1 = longest context, slowest)",
    )
    roll.add_argument("--seed", type=int, default=0)
    roll.add_argument("--scale", type=int, default=4, help="upscale factor for the written video")
    roll.add_argument("--device", default="auto")
    roll.set_defaults(func=_cmd_rollout)

    ev = sub.add_parser("eval", help="evaluate a bundle on a dataset folder; writes metrics JSON")
    ev.add_argument("--model", required=True)
    ev.add_argument("--data", required=True)
    ev.add_argument("--out", required=True, help="metrics JSON")
    ev.add_argument("--max-clips", type=int, default=64)
    ev.add_argument("--horizon", type=int, default=4, help="t of delta_t_psnr")
    ev.add_argument(
        "--control-frames",
        type=int,
        default=10,
        help="frames each latent code is held from each prompt in the control measure (0: leave it out)",
    )
    ev.add_argument("--control-prompts", type=int, default=24, help="prompt frames of the control measure")
    ev.add_argument(
        "--split",
        choices=("val", "train", "all"),
        default="val",
        help="which files of --data to score: the held-out files of the split training used (default), "
        "the training files, or all (a folder the model never saw)",
    )
    ev.add_argument("--steps", type=int, help="MaskGIT steps per frame (default: the bundle's)")
    ev.add_argument(
        "--temperature", type=float, help="MaskGIT sampling temperature, 0 = greedy (default: the bundle's)"
    )
    ev.add_argument(
        "--guidance",
        type=float,
        help="classifier-free guidance weight on the latent action, 1 = none (default: the bundle's; "
        "for a model trained with model.action_dropout > 0)",
    )
    ev.add_argument(
        "--persistence",
        type=int,
        nargs="?",
        const=1000,
        default=0,
        metavar="STEPS",
        help="also play STEPS (default 1000) random latent actions: memory, latency p50/p99 and collapse "
        "over time, written beside --out (.persistence.json/.png/.gif)",
    )
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--device", default="auto")
    ev.set_defaults(func=_cmd_eval)

    play = sub.add_parser("play", help="interactive web page: keys step the world with latent actions")
    play.add_argument("--model", required=True)
    play.add_argument("--prompt", help="prompt video or image (default: the bundle's sample prompt)")
    play.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    play.add_argument("--port", type=int, default=8765)
    play.add_argument("--device", default="auto")
    play.add_argument("--no-browser", action="store_true")
    play.add_argument(
        "--steps", type=int, default=None, help="MaskGIT steps per frame (default from the bundle; fewer is faster)"
    )
    play.add_argument("--temperature", type=float, default=None)
    play.add_argument(
        "--guidance",
        type=float,
        default=None,
        help="classifier-free guidance weight on the latent action, 1 = none (default: the bundle's; "
        "for a model trained with model.action_dropout > 0)",
    )
    play.add_argument(
        "--slide",
        type=int,
        default=None,
        help="frames dropped when the context window is full (default: half the window)",
    )
    play.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the per-frame passes of the dynamics model and the decoder (CUDA graphs on a GPU), "
        "compiled for every cache length before the page opens",
    )
    play.set_defaults(func=_cmd_play)

    bench = sub.add_parser("bench", help="throughput and latency benchmarks, JSON out")
    bench.add_argument("--model", help="world-model bundle (default: a fresh model of --config's size)")
    bench.add_argument("--config", help="genie.yaml whose model sizes to benchmark")
    bench.add_argument("--data", help="dataset folder for decode throughput")
    bench.add_argument("--data-workers", type=int, default=2, help="DataLoader workers for the decode figures")
    bench.add_argument("--out", default="bench.json")
    bench.add_argument("--device", default="auto")
    bench.add_argument("--batch-size", type=int, default=8, help="clips per training step")
    bench.add_argument(
        "--dtype", default="auto", choices=("auto", "fp32", "bf16"), help="auto: bf16 autocast on CUDA, fp32 on the CPU"
    )
    bench.add_argument(
        "--compile",
        action="store_true",
        help="torch.compile the training steps and the play step (CUDA graphs on a GPU)",
    )
    bench.add_argument(
        "--steps", type=int, default=None, help="MaskGIT steps per generated frame (default: the model's)"
    )
    bench.add_argument(
        "--slide",
        type=int,
        default=None,
        help="frames dropped when the play context window is full (default: half the window)",
    )
    bench.add_argument(
        "--stages",
        default=None,
        help="comma-separated training rows (default all: tokenizer,lam,dynamics,dynamics+encode; none: play only)",
    )
    bench.add_argument("--play-batches", default="1,8", help="comma-separated batch sizes for the play figures")
    bench.add_argument(
        "--peak-tflops",
        type=float,
        default=None,
        help="device peak for MFU (default on CUDA: 788, the bf16 matmul rate measured on an H100)",
    )
    bench.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `genie` with `argv` (sys.argv[1:] when None); returns the exit status: 0, 2 for a user error (printed as
    one line; tracebacks with -v), 130 on Ctrl-C. Errors that are not user errors (genie.errors.USER_ERRORS)
    propagate."""
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if command is not None and argv[command] == "train":  # --model.dim 128 is the override model.dim=128
        argv[command + 1 :] = config_flags_to_overrides(argv[command + 1 :])
    # overrides may come before or after options (argparse binds a '*' positional only once)
    args, extra = parser.parse_known_args(argv)
    if args.command == "train" and all("=" in e and not e.startswith("-") for e in extra):
        args.overrides = [*args.overrides, *extra]
    elif extra:  # one line, not argparse's usage block: name what was not understood and what is expected
        hint = ""
        if args.command == "train":  # the KEY=VALUE overrides among them were understood
            extra = [e for e in extra if "=" not in e or e.startswith("-")]
            hint = f"; {OVERRIDE_HINT}"
        print(
            f"genie: error: unrecognized arguments: {' '.join(extra)} (see genie {args.command} --help{hint})",
            file=sys.stderr,
        )
        return 2
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        args.func(args)
    except KeyboardInterrupt:
        print("genie: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        from genie.errors import USER_ERRORS  # imported here: it pulls in torch, which `genie data` does not need

        if args.verbose or not isinstance(e, USER_ERRORS):
            raise
        print(f"genie: error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
