"""One run, end to end: resolve the configuration, build everything, train, write results."""

from __future__ import annotations

import dataclasses
import traceback
from pathlib import Path

from cl_fir.config import RunConfig, apply_overrides
from cl_fir.engine.checkpoint import save_checkpoint
from cl_fir.engine.cost import CostMeter, forward_flops_per_image
from cl_fir.engine.device import resolve_device
from cl_fir.engine.loop import TrainingLoop
from cl_fir.engine.progress import Reporter
from cl_fir.engine.seeding import rng_state, seed_everything
from cl_fir.errors import ConfigError
from cl_fir.evaluation.evaluator import metric_names
from cl_fir.models import build_model
from cl_fir.models.backbones import load_local_weights
from cl_fir.registry import get_strategy_class
from cl_fir.report.results import RunResults
from cl_fir.report.run_dir import RunDirectory, now, versions
from cl_fir.scenario import Scenario, apply_spec_defaults, load_spec


def resolve_config(strategy: str, scenario: str, overrides: dict | None = None,
                   strategy_options: dict | None = None, **top_level) -> RunConfig:
    """Defaults < scenario file < ``overrides`` (``section.key``) and top-level options."""
    cfg = RunConfig(strategy=strategy, scenario=scenario)
    spec = load_spec(scenario)   # cfg.scenario stays as given: a shipped name or a path
    apply_spec_defaults(spec, cfg)
    apply_overrides(cfg, overrides or {})
    for key, value in top_level.items():
        if value is not None:
            if not hasattr(cfg, key):
                raise ConfigError(f"unknown run option {key!r}")
            setattr(cfg, key, value)
    cls = get_strategy_class(strategy)
    opts = cls.parse_options(strategy_options or {})
    cfg.strategy_options = dataclasses.asdict(opts)
    if spec.family not in cls.families:
        raise ConfigError(f"strategy {strategy!r} does not support the {spec.family!r} task family of scenario "
                          f"{spec.name!r} (it supports: {', '.join(cls.families)})")
    cfg.validate()
    return cfg


def execute_run(cfg: RunConfig, overwrite: bool = False, reporter: Reporter | None = None) -> Path:
    """Run ``cfg`` and return its run directory. Files are complete after every increment."""
    reporter = reporter or Reporter(enabled=False)
    spec = load_spec(cfg.scenario)
    strategy_cls = get_strategy_class(cfg.strategy)
    strategy = strategy_cls(strategy_cls.parse_options(cfg.strategy_options))
    setup = resolve_device(cfg.device, cfg.precision)

    run_dir = RunDirectory.prepare(cfg.output_dir, spec.name, cfg.strategy, cfg.resolved_run_id, overwrite)
    run_dir.write_config(cfg.to_dict())
    info = {"status": "running", "scenario": spec.name, "strategy": cfg.strategy, "seed": cfg.seed,
            "run_id": cfg.resolved_run_id, "started": now(), "versions": versions(), "device": setup.describe(),
            "increments_done": 0}
    run_dir.write_info(info)
    try:
        reporter.log(f"[bold]cl-fir run[/bold] {cfg.strategy} on {spec.name} (seed {cfg.seed}) -> {run_dir.path}")
        seed_everything(cfg.seed)
        scenario = Scenario(spec, cfg, reporter.progress_factory())
        described = scenario.describe()
        info["tasks"] = [{**t, "increment": t["increment"] + 1} for t in described["tasks"]]
        info["increments"] = described["increments"]
        info["data_root"] = described["data_root"]

        seed_everything(cfg.seed)
        model = build_model(cfg.model, scenario.meta.num_attributes, strategy.head_of_attribute(scenario))
        if cfg.model.weights:
            info["weights"] = load_local_weights(model.backbone, cfg.model.weights)
        model = setup.prepare_model(model)
        flops = forward_flops_per_image(model, cfg.transforms.crop, setup, attribute=scenario.tasks[0])
        cost = CostMeter(setup, flops)
        results = RunResults(scenario.task_names, scenario.tasks, scenario.task_increment,
                             [scenario.eval_tasks[a].num_queries for a in scenario.tasks], metric_names(cfg.eval))
        info["parameters"] = sum(p.numel() for p in model.parameters())
        run_dir.write_info(info)

        def on_increment_end(loop: TrainingLoop, inc, inc_results: dict) -> None:
            results.record(inc.index, inc_results)
            info["increments_done"] = results.increments_done
            if results.increments_done == len(scenario.increments):
                info["status"] = "complete"
                info["finished"] = now()
            run_dir.write_results(info, results, cost.to_dict())
            _checkpoint(run_dir, loop, inc.index, results, cost, cfg)
            run_dir.write_info(info)
            d = results.derived()
            row = ", ".join(f"{scenario.meta.names[a]} {m['map_all']:.1f}" for a, m in inc_results.items())
            msg = f"  MAP@all after increment {inc.index + 1}: {row}; seen-task mean {d['final']:.2f}"
            if inc.index:
                msg += f", forgetting {d['forgetting']:.2f}"
            reporter.log(msg)

        loop = TrainingLoop(cfg, scenario, strategy, model, setup, cost, reporter, on_increment_end)
        loop.run()
        reporter.log(f"[green]done[/green]: {run_dir.path}")
        return run_dir.path
    except BaseException as exc:
        info["status"] = "failed" if not isinstance(exc, KeyboardInterrupt) else "interrupted"
        info["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        info["finished"] = now()
        run_dir.write_info(info)
        raise


def _checkpoint(run_dir: RunDirectory, loop: TrainingLoop, increment: int, results: RunResults, cost: CostMeter,
                cfg: RunConfig) -> None:
    """Everything needed to continue after this increment; only the latest is kept."""
    path = run_dir.checkpoint_dir / f"increment_{increment + 1}.pt"
    save_checkpoint(path, {
        "increment": increment,
        "loop": loop.state_dict(),
        "results": results.state_dict(),
        "cost": cost.to_dict(),
        "rng": rng_state(),
        "config": cfg.to_dict(),
    })
    for old in run_dir.checkpoint_dir.glob("increment_*.pt"):
        if old != path:
            old.unlink()
