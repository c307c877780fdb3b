"""The package layers and their direction (docs/layout.md): genie.models (torch only) <- genie.data <-
genie.training (Lightning) <- the commands. Loading and stepping a bundle imports no Lightning, and no module
imports from a layer above its own."""

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import tiny

from genie.models.world import WorldModel

GENIE = Path(__file__).resolve().parent.parent / "genie"
# top-level modules every layer may import: plain configuration and metric functions (no genie.data/training)
FOUNDATION = {"genie", "genie.config", "genie.metrics"}


def tiny_world() -> WorldModel:
    return tiny.tiny_world(prompt=np.zeros((2, 16, 16, 3), np.uint8))


def test_loading_and_stepping_a_bundle_imports_no_lightning(tmp_path):
    """Nor jsonargparse: genie.config imports it only to parse a config given on the command line."""
    bundle = tiny_world().save(tmp_path / "world_model.pt")
    script = textwrap.dedent(f"""
        import sys
        from genie import WorldModel, load_lam, load_tokenizer

        world = WorldModel.load({str(bundle)!r})
        frame = world.reset(seed=0)
        for action in (0, 1, 2, 3, 0):  # past the 4-frame window: the context slides
            frame = world.step([action])
        assert frame.shape == (1, 16, 16, 3), frame.shape
        load_tokenizer({str(bundle)!r}), load_lam({str(bundle)!r})
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning", "jsonargparse"))
        assert not loaded, loaded[:5]
        training = sorted(m for m in sys.modules if m.startswith(("genie.training", "genie.data")))
        assert not training, training
        print("ok")
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr[-2000:]


def module_name(path: Path) -> str:
    parts = path.relative_to(GENIE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def genie_imports(path: Path) -> set[str]:
    """Every genie module `path` imports, at any depth of the file (function-level imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "genie"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "genie":
            # `from genie.data import clips` imports genie.data.clips; `from genie.data.clips import X` genie.data.clips
            found.add(node.module)
            found |= {
                f"{node.module}.{alias.name}"
                for alias in node.names
                if (GENIE.parent / node.module.replace(".", "/") / f"{alias.name}.py").exists()
            }
    return found


def layer(module: str) -> int:
    """0 models, 1 data, 2 training, 3 commands; -1 for the foundation every layer may use."""
    if module in FOUNDATION:
        return -1
    for rank, package in enumerate(("genie.models", "genie.data", "genie.training")):
        if module == package or module.startswith(package + "."):
            return rank
    return 3


def test_every_module_is_in_a_layer_and_the_layers_import_downwards():
    modules = {module_name(p): p for p in GENIE.rglob("*.py")}
    assert {"genie.models.world", "genie.data.clips", "genie.training.trainer", "genie.cli"} <= set(modules)
    wrong = []
    for name, path in sorted(modules.items()):
        for imported in sorted(genie_imports(path)):
            if imported == "genie":
                continue
            if layer(name) == -1:
                ok = layer(imported) in (-1, 0)  # config reads resolution helpers from genie.models
            else:
                ok = layer(imported) <= layer(name)
            if not ok:
                wrong.append(f"{name} imports {imported}")
    assert not wrong, "imports against the layering (docs/layout.md):\n" + "\n".join(wrong)


def test_the_model_layer_imports_only_torch_numpy_and_einops():
    banned = ("lightning", "pytorch_lightning", "torchmetrics", "timm", "decord", "av", "PIL")
    wrong = []
    for path in sorted((GENIE / "models").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0:
                names = [node.module or ""]
            wrong += [f"{path.name}: {n}" for n in names if n.split(".")[0] in banned]
    assert not wrong, wrong


def test_the_cli_names_the_stages_the_pipeline_trains():
    from genie.cli import STAGE_NAMES
    from genie.training.pipeline import STAGES

    assert STAGE_NAMES == tuple(STAGES)
    for stage, (run_config, module) in STAGES.items():
        assert module.stage == stage and run_config().run_dir, stage
