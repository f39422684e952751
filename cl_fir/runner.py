"""One run, end to end: resolve the configuration, build everything, train, write results.

A run can be continued from its latest increment-boundary checkpoint
(:func:`resume_run`): everything is rebuilt from the saved configuration exactly as in
a fresh run (same seeds, same initial weights), then the checkpoint's model, strategy
state, results and cost are loaded and training goes on at the next increment.
"""

from __future__ import annotations

import dataclasses
import json
import traceback
from pathlib import Path

from cl_fir.config import SECTIONS, RunConfig, apply_overrides, apply_section
from cl_fir.engine.checkpoint import load_checkpoint, save_checkpoint
from cl_fir.engine.cost import CostMeter, forward_flops_per_image
from cl_fir.engine.device import resolve_device
from cl_fir.engine.loop import TrainingLoop
from cl_fir.engine.progress import Reporter
from cl_fir.engine.seeding import rng_state, seed_everything
from cl_fir.errors import ConfigError
from cl_fir.data.image_dataset import count_load_failures
from cl_fir.evaluation.evaluator import METRIC_LABELS, metric_names
from cl_fir.models.backbones import FeatureMapBackbone, load_local_weights
from cl_fir.registry import get_strategy_class, is_file_spec
from cl_fir.report.cost_ratio import find_reference_run, ratio_line
from cl_fir.report.results import RunResults
from cl_fir.report.run_dir import RunDirectory, now, versions
from cl_fir.scenario import Scenario, apply_spec_defaults, load_spec


def resolve_config(strategy: str, scenario: str, overrides: dict | None = None,
                   strategy_options: dict | None = None, **top_level) -> RunConfig:
    """Defaults < scenario file (sections, then ``[strategies.<name>]``) < ``overrides`` and options."""
    source = None
    if is_file_spec(strategy):   # a user's file: the run is named after the class, the file is remembered
        path, _, class_name = strategy.rpartition(":")
        source = f"{Path(path).resolve()}:{class_name}"
        strategy = get_strategy_class(source).name
    cfg = RunConfig(strategy=strategy, scenario=scenario, strategy_source=source)
    spec = load_spec(scenario)   # cfg.scenario stays as given: a shipped name or a path
    apply_spec_defaults(spec, cfg)
    apply_overrides(cfg, overrides or {})
    for key, value in top_level.items():
        if value is not None:
            if not hasattr(cfg, key):
                raise ConfigError(f"unknown run option {key!r}")
            apply_section(cfg, {key: value}, "run option")
    cls = get_strategy_class(source or strategy)
    opts = cls.parse_options({**spec.strategy_defaults.get(strategy, {}), **(strategy_options or {})})
    cfg.strategy_options = dataclasses.asdict(opts)
    if spec.family not in cls.families:
        raise ConfigError(f"strategy {strategy!r} does not support the {spec.family!r} task family of scenario "
                          f"{spec.name!r} (it supports: {', '.join(cls.families)})")
    cfg.validate()
    return cfg


def config_from_dict(data: dict, where: str) -> RunConfig:
    """Rebuild a :class:`RunConfig` from its ``config.json`` form."""
    try:
        cfg = RunConfig(strategy=data["strategy"], scenario=data["scenario"])
    except (KeyError, TypeError):
        raise ConfigError(f"{where}: not a cl-fir run configuration") from None
    for key, value in data.items():
        if key in SECTIONS:
            apply_section(getattr(cfg, key), value, f"{where} {key}")
        elif key in ("strategy", "scenario"):
            continue
        elif key == "strategy_options":
            cfg.strategy_options = dict(value)
        else:
            apply_section(cfg, {key: value}, where)
    cfg.validate()
    return cfg


def execute_run(cfg: RunConfig, overwrite: bool = False, reporter: Reporter | None = None,
                stop_after: int | None = None) -> Path:
    """Run ``cfg`` and return its run directory. Files are complete after every increment.

    ``stop_after`` stops after that many increments (the run stays resumable).
    """
    spec = load_spec(cfg.scenario)
    run_dir = RunDirectory.prepare(cfg.output_dir, spec.name, cfg.strategy, cfg.resolved_run_id, overwrite)
    run_dir.write_config(cfg.to_dict())
    info = {"status": "running", "scenario": spec.name, "strategy": cfg.strategy, "seed": cfg.seed,
            "run_id": cfg.resolved_run_id, "started": now(), "increments_done": 0}
    return _run(cfg, run_dir, info, reporter or Reporter(enabled=False), None, stop_after)


def resume_run(path: str | Path, reporter: Reporter | None = None, stop_after: int | None = None) -> Path:
    """Continue a run from its latest increment-boundary checkpoint."""
    run_dir = RunDirectory(Path(path))
    for name in ("config.json", "run.json"):
        if not (run_dir.path / name).is_file():
            raise ConfigError(f"--resume {run_dir.path}: not a cl-fir run directory (missing {name})")
    cfg = config_from_dict(json.loads((run_dir.path / "config.json").read_text()), f"{run_dir.path}/config.json")
    info = json.loads((run_dir.path / "run.json").read_text())
    if info.get("status") == "complete":
        raise ConfigError(f"--resume {run_dir.path}: the run is already complete")
    checkpoints = sorted(run_dir.checkpoint_dir.glob("increment_*.pt"),
                         key=lambda p: int(p.stem.split("_")[1]))
    checkpoint = load_checkpoint(checkpoints[-1]) if checkpoints else None
    if checkpoint is not None and checkpoint["config"] != cfg.to_dict():
        raise ConfigError(f"--resume {run_dir.path}: the checkpoint was written with a different config.json")
    info.update(status="running", resumed=now())
    info.pop("error", None)
    return _run(cfg, run_dir, info, reporter or Reporter(enabled=False), checkpoint, stop_after)


def build_loop(cfg: RunConfig, reporter: Reporter | None = None, on_increment_end=None,
               info: dict | None = None) -> TrainingLoop:
    """Everything a run trains with, built deterministically from ``cfg`` (seeded twice: the
    data and the initial weights do not depend on each other)."""
    reporter = reporter or Reporter(enabled=False)
    info = {} if info is None else info
    spec = load_spec(cfg.scenario)
    strategy_cls = get_strategy_class(cfg.strategy_source or cfg.strategy)
    strategy = strategy_cls(strategy_cls.parse_options(cfg.strategy_options))
    setup = resolve_device(cfg.device, cfg.precision)
    seed_everything(cfg.seed)
    scenario = Scenario(spec, cfg, reporter.progress_factory(), strict=cfg.strict)
    seed_everything(cfg.seed)
    model = strategy.build_model(cfg, scenario)
    if cfg.model.weights:
        info["weights"] = [load_local_weights(bb, cfg.model.weights) for bb in _backbones(model)][0]
    model = setup.prepare_model(model)
    flops, head_flops = forward_flops_per_image(model, cfg.transforms.crop, setup, attribute=scenario.tasks[0])
    cost = CostMeter(setup, flops, head_flops, parameters=sum(p.numel() for p in model.parameters()))
    return TrainingLoop(cfg, scenario, strategy, model, setup, cost, reporter, on_increment_end)


def _run(cfg: RunConfig, run_dir: RunDirectory, info: dict, reporter: Reporter, checkpoint: dict | None,
         stop_after: int | None) -> Path:
    spec = load_spec(cfg.scenario)
    info.update(versions=versions())
    run_dir.write_info(info)
    try:
        start = 0 if checkpoint is None else checkpoint["increment"] + 1
        verb = "cl-fir run" if checkpoint is None else f"cl-fir resume (at increment {start + 1})"
        reporter.log(f"[bold]{verb}[/bold] {cfg.strategy} on {spec.name} (seed {cfg.seed}) -> {run_dir.path}")
        loop = build_loop(cfg, reporter, info=info)
        scenario, cost = loop.scenario, loop.cost
        info["device"] = loop.setup.describe()
        described = scenario.describe()
        info["tasks"] = described["tasks"]
        info["increments"] = described["increments"]
        info["data_root"] = described["data_root"]
        info["protocol"] = described["protocol"]
        info["data"] = described["data"]
        info["parameters"] = cost.parameters
        failures = run_dir.path / "load_failures.txt"
        scenario.log_load_failures_to(failures)
        results = RunResults(scenario.task_names, scenario.tasks, scenario.task_increment,
                             [scenario.eval_tasks[a].num_queries for a in scenario.tasks],
                             metric_names(cfg.eval, scenario.protocol))
        info["primary_metric"] = results.primary
        label = METRIC_LABELS[results.primary]
        data = info["data"]
        if data["bad_images"]:
            reporter.log(f"[yellow]skipping {data['bad_images']} of {data['checked_images']} images[/yellow] "
                         f"(missing or unreadable; rows skipped: {data['skipped_rows']}); --strict refuses instead")
        run_dir.write_info(info)

        def on_increment_end(loop: TrainingLoop, inc, inc_results: dict) -> None:
            results.record(inc.index, inc_results)
            info["data"]["load_failures"] = count_load_failures(failures)
            info["increments_done"] = results.increments_done
            if results.increments_done == len(scenario.increments):
                info["status"] = "complete"
                info["finished"] = now()
                reference = find_reference_run(Path(cfg.output_dir), spec.name, cfg.seed, cfg.strategy)
                info["cost_ratio"] = reference.ratios(cost.totals()) if reference else None
            run_dir.write_results(info, results, cost.to_dict())
            _checkpoint(run_dir, loop, inc.index, results, cost, cfg)
            run_dir.write_info(info)
            d = results.derived()
            row = ", ".join(f"{scenario.meta.names[a]} {m[results.primary]:.1f}" for a, m in inc_results.items())
            msg = f"  {label} after increment {inc.index + 1}: {row}; seen-task mean {d['final']:.2f}"
            if inc.index:
                msg += f", forgetting {d['forgetting']:.2f}"
            reporter.log(msg)

        loop.on_increment_end = on_increment_end
        if checkpoint is not None:
            loop.load_state_dict(checkpoint["loop"])
            results.load_state_dict(checkpoint["results"])
            cost.load(checkpoint["cost"])
        stop = len(scenario.increments) if stop_after is None else min(len(scenario.increments), start + stop_after)
        loop.run(start, stop)
        if info["status"] == "complete":
            reporter.log(f"[green]done[/green]: {run_dir.path}")
            reporter.log(ratio_line(cfg, spec.name, info.get("cost_ratio")))
        else:
            info["status"] = "stopped"
            run_dir.write_info(info)
            reporter.log(f"stopped after increment {stop}; continue with: cl-fir run --resume {run_dir.path}")
        return run_dir.path
    except BaseException as exc:
        info["status"] = "failed" if not isinstance(exc, KeyboardInterrupt) else "interrupted"
        info["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
        info["finished"] = now()
        run_dir.write_info(info)
        raise


def _backbones(model) -> list[FeatureMapBackbone]:
    return [m for m in model.modules() if isinstance(m, FeatureMapBackbone)]


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
