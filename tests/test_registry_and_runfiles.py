"""Strategy registry: user files, entry points, option help; run files; the shipped ablations;
and the tutorial's code, which must keep working."""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from cl_fir import registry
from cl_fir.cli import app
from cl_fir.errors import ConfigError
from cl_fir.registry import describe_options, get_strategy_class, register_strategy
from cl_fir.runner import build_loop, execute_run, resolve_config, resume_run
from cl_fir.strategy import Strategy

runner = CliRunner()
DOCS = Path(__file__).resolve().parents[1] / "docs"


def _tutorial_blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", (DOCS / "tutorial.md").read_text(), flags=re.S)


def test_the_strategy_example_in_extending_md_runs_from_its_file(tiny_scenario, tmp_path):
    (code,) = re.findall(r"```python\n(.*?)```", (DOCS / "extending.md").read_text(), flags=re.S)
    path = tmp_path / "my_method.py"
    path.write_text(code)
    loop = build_loop(resolve_config(f"{path}:MyMethod", str(tiny_scenario), {"train.epochs": 1},
                                     output_dir=str(tmp_path / "out"), seed=1))
    loop.run(0, 1)
    assert float(loop.context.loss_terms["l2"].detach()) > 0


@pytest.fixture
def tutorial_file(tmp_path) -> Path:
    code, _ = _tutorial_blocks("python")
    path = tmp_path / "my_ablation.py"
    path.write_text(code)
    return path


def test_the_tutorials_new_method_fits_a_screen_runs_from_its_file_and_resumes(tiny_scenario, tmp_path):
    _, code = _tutorial_blocks("python")
    assert len(code.splitlines()) <= 40
    path = tmp_path / "l2_anchor.py"
    path.write_text(code)
    spec = f"{path}:L2Anchor"
    full = execute_run(resolve_config(spec, str(tiny_scenario), output_dir=str(tmp_path / "full"), seed=2))
    split = execute_run(resolve_config(spec, str(tiny_scenario), output_dir=str(tmp_path / "split"), seed=2),
                        stop_after=1)
    resume_run(split)
    assert (split / "matrix.csv").read_text() == (full / "matrix.csv").read_text()
    # the anchor term joins the loss from the second increment on, and pulls towards the first's weights
    loop = build_loop(resolve_config(spec, str(tiny_scenario), output_dir=str(tmp_path / "loop"), seed=2))
    loop.run(0, 1)
    assert "anchor" not in loop.context.loss_terms
    first = {n: p.detach().clone() for n, p in loop.model.named_parameters()}
    assert all((loop.strategy.anchor[n] == first[n]).all() for n in loop.strategy.anchor)
    loop.run(1, 2)
    assert float(loop.context.loss_terms["anchor"].detach()) > 0


def test_tutorial_strategy_runs_from_its_file_and_resumes(tutorial_file, tiny_scenario, tmp_path):
    spec = f"{tutorial_file}:MCLFIRFrozenTeacher"
    cfg = resolve_config(spec, str(tiny_scenario), output_dir=str(tmp_path / "out"), seed=2)
    assert cfg.strategy == "mcl_fir_frozen_teacher" and cfg.strategy_source.endswith("my_ablation.py:MCLFIRFrozenTeacher")
    split = execute_run(cfg, stop_after=1)
    assert split == tmp_path / "out" / "tiny" / "mcl_fir_frozen_teacher" / "seed2"
    assert json.loads((split / "config.json").read_text())["strategy_source"] == cfg.strategy_source
    resume_run(split)
    full = execute_run(resolve_config(spec, str(tiny_scenario), output_dir=str(tmp_path / "full"), seed=2))
    assert (split / "matrix.csv").read_text() == (full / "matrix.csv").read_text()
    # the teacher really stays at its initial weights
    loop = build_loop(cfg)
    loop.run(0, 1)
    initial = loop.initial_state
    teacher = loop.strategy.teacher.module.state_dict()
    assert all((teacher[k].cpu() == initial[k]).all() for k in teacher if k in initial)


def test_tutorial_run_file_is_valid(tutorial_file, tiny_scenario, tmp_path):
    (toml,) = _tutorial_blocks("toml")
    toml = toml.replace('strategy = "mcl_fir_frozen_teacher"', f'strategy = "{tutorial_file}:MCLFIRFrozenTeacher"')
    toml = toml.replace('scenario = "synth-4inc"', f'scenario = "{tiny_scenario}"').replace("epochs = 2", "epochs = 1")
    run_file = tmp_path / "run.toml"
    run_file.write_text(toml)
    res = runner.invoke(app, ["run", "--config", str(run_file), "--output-dir", str(tmp_path / "o"), "--quiet",
                              "--opt", "view_strength=0.5"])
    assert res.exit_code == 0, res.output
    cfg = json.loads((tmp_path / "o" / "tiny" / "mcl_fir_frozen_teacher" / "seed1" / "config.json").read_text())
    assert cfg["seed"] == 1 and cfg["train"]["epochs"] == 1
    assert cfg["strategy_options"]["kd_weight"] == 3.0 and cfg["strategy_options"]["view_strength"] == 0.5


def test_run_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('strategy = "finetune"\nlearning_rate = 3\n')
    res = runner.invoke(app, ["run", "--config", str(bad)])
    assert res.exit_code == 2 and f"{bad}: unknown key 'learning_rate'" in res.output
    bad.write_text('seed = "abc"\n')
    res = runner.invoke(app, ["run", "--config", str(bad), "--quiet"])
    assert res.exit_code == 2 and "seed" in res.output


def test_strategy_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        get_strategy_class(f"{tmp_path}/nope.py:X")
    path = tmp_path / "s.py"
    path.write_text("from cl_fir.strategy import Strategy\nclass Mine(Strategy):\n    pass\n")
    with pytest.raises(ConfigError, match="no Strategy subclass 'Other'.*Mine"):
        get_strategy_class(f"{path}:Other")
    (tmp_path / "boom.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ConfigError, match="importing .* failed: RuntimeError: boom"):
        get_strategy_class(f"{tmp_path}/boom.py:Mine")


def test_entry_point_strategies_are_discovered(monkeypatch):
    class FromPackage(Strategy):
        summary = "from an installed package"

    fake = SimpleNamespace(name="pkg_strategy", value="pkg.mod:FromPackage", load=lambda: FromPackage)
    monkeypatch.setattr(registry.importlib.metadata, "entry_points", lambda group: [fake])
    monkeypatch.setattr(registry, "_discovered", False)
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    assert registry.available_strategies()["pkg_strategy"] is FromPackage


def test_option_help_from_comments_and_metadata():
    from dataclasses import dataclass, field

    class WithHelp(Strategy):
        @dataclass
        class Options:
            alpha: float = 0.5      # how much of the thing
            beta: int = field(default=3, metadata={"help": "explicit help"})

    opts = {o["name"]: o for o in describe_options(WithHelp)}
    assert opts["alpha"] == {"name": "alpha", "type": "float", "default": 0.5, "help": "how much of the thing"}
    assert opts["beta"]["help"] == "explicit help"


def test_register_strategy_sets_families(monkeypatch):
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))

    @register_strategy("composed_only", families=("composed",))
    class ComposedOnly(Strategy):
        pass

    assert ComposedOnly.families == ("composed",)


def test_list_strategies_verbose_shows_options():
    res = runner.invoke(app, ["list", "strategies", "-v"])
    assert res.exit_code == 0
    assert "ema_momentum (float, default 0.999): teacher <- m * teacher" in res.output
    assert "mcl_fir_no_ema" in res.output and "mcl_fir_single_head" in res.output


def test_shipped_ablations(tiny_scenario):
    no_ema = build_loop(resolve_config("mcl_fir_no_ema", str(tiny_scenario)))
    no_ema.run(0, 2)
    assert no_ema.strategy.teacher is None
    assert all(c.extra_forward_images == 0 for c in no_ema.cost.increments)
    single = build_loop(resolve_config("mcl_fir_single_head", str(tiny_scenario)))
    assert len(single.model.heads) == 1
    single.run(0, 2)
    assert all(p.requires_grad for p in single.model.heads[0].parameters())   # the shared head is never frozen
    for name in ("mcl_fir_no_ema", "mcl_fir_single_head"):
        module = __import__(f"cl_fir.strategies.{name}", fromlist=["x"])
        source = Path(module.__file__).read_text()
        body = source.split('"""', 2)[2]          # without the module docstring
        assert len([ln for ln in body.splitlines() if ln.strip()]) <= 15, name


def test_docs_cover_every_shipped_scenario_and_strategy():
    from cl_fir.scenario import available_scenarios

    scenarios_doc = (DOCS / "scenarios.md").read_text()
    assert all(f"### `{name}`" in scenarios_doc for name in available_scenarios())
    strategies_doc = (DOCS / "strategies.md").read_text()
    shipped = [n for n, c in registry.available_strategies().items() if c.__module__.startswith("cl_fir.strategies.")]
    assert all(f"| `{name}` |" in strategies_doc for name in shipped)
