"""One run, end to end: resolve the configuration, build everything, train, write results.

A run can be continued from its latest intact checkpoint (:func:`resume_run`):
everything is rebuilt from the saved configuration exactly as in a fresh run (same seeds,
same initial weights), then the checkpoint's model, strategy state, results and cost are
loaded and training goes on where the checkpoint was taken. One process at a time writes
a run folder (its run lock); a failed write stops the run with the last good checkpoint
named and intact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.metadata
import os
import platform
import signal
import threading
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from cl_fir.files import readback
from cl_fir.files.atomic_io import output_error
from cl_fir.config import SECTIONS, RunConfig, apply_overrides, apply_section
from cl_fir.data.image_dataset import count_load_failures
from cl_fir.data.transforms import resolve_normalize
from cl_fir.engine.checkpoint import DamagedCheckpoint, load_checkpoint, save_checkpoint, verify_checkpoint
from cl_fir.engine.cost import CostMeter, forward_flops_per_image
from cl_fir.runtime.device import resolve_device
from cl_fir.runtime.distributed import init_from_env
from cl_fir.engine.loop import TrainingLoop
from cl_fir.engine.progress import Reporter
from cl_fir.engine.seeding import rng_state, seed_everything
from cl_fir.engine.synced_batchnorm import sync_batchnorm
from cl_fir.errors import ConfigError, OutputError, TrainingError
from cl_fir.evaluation.evaluator import METRIC_LABELS, chance_levels, metric_names
from cl_fir.families import family_named, family_of
from cl_fir.models.backbones import FeatureMapBackbone
from cl_fir.models.weights import load_weights
from cl_fir.registry import get_strategy_class, is_file_spec
from cl_fir.report.cost_ratio import find_reference_run, ratio_line
from cl_fir.report.results import RunResults
from cl_fir.report.run_dir import RunDirectory, now
from cl_fir.scenario import apply_spec_defaults, build_scenario, load_spec


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
    family_named(spec.family).check_config(cfg)
    cls.check_config(opts, cfg)
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
                stop_after: int | None = None, handle_signals: bool = False) -> Path:
    """Run ``cfg`` and return its run directory. Files are complete after every increment.

    ``stop_after`` stops after that many increments (the run stays resumable). With
    ``handle_signals`` (the command line) SIGINT/SIGTERM checkpoint and stop the run
    (:func:`stop_on_signals`); a library caller's own handlers are left alone by default.
    """
    spec = load_spec(cfg.scenario)
    ctx = init_from_env()
    reporter = reporter or Reporter(enabled=False)
    if ctx.is_main:   # the run lock is held from here until this function returns or raises
        run_dir = RunDirectory.prepare(cfg.output_dir, spec.name, cfg.strategy, cfg.resolved_run_id, overwrite)
        if run_dir.lock.took_over is not None:
            reporter.warn(run_dir.lock.describe_takeover())
    try:
        if ctx.is_main:
            run_dir.write_config(cfg.to_dict())
        ctx.barrier()
        if not ctx.is_main:   # other data-parallel ranks: same run, no output
            run_dir = RunDirectory(RunDirectory.path_for(cfg.output_dir, spec.name, cfg.strategy,
                                                         cfg.resolved_run_id), read_only=True)
            reporter = Reporter(enabled=False)
        info = {"status": "running", "scenario": spec.name, "strategy": cfg.strategy, "seed": cfg.seed,
                "run_id": cfg.resolved_run_id, "started": now(), "increments_done": 0}
        return _run(cfg, run_dir, info, reporter, None, stop_after, handle_signals)
    finally:
        if ctx.is_main:
            run_dir.release_lock()


#: Settings a resumed run may never change: they define which run it is.
IDENTITY_KEYS = ("strategy", "strategy_source", "scenario", "seed", "output_dir", "run_id")


def config_diff(old: dict, new: dict, prefix: str = "") -> list[dict]:
    """Every setting that differs, as ``{"key": "train.lr", "old": ..., "new": ...}``."""
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict) and key not in ("backbone_kwargs", "strategy_options"):
            out += config_diff(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append({"key": f"{prefix}{key}", "old": a, "new": b})
    return out


@dataclass
class CheckpointChoice:
    """What ``--resume`` continues from: the newest intact checkpoint, and the newer ones
    found damaged on the way to it (file, problem)."""

    checkpoint: dict | None = None      # None: no checkpoint, the run starts from its beginning
    path: Path | None = None
    damaged: list[tuple[Path, str]] = field(default_factory=list)

    def position(self) -> str:
        return describe_position(self.checkpoint)


def describe_position(checkpoint: dict | None) -> str:
    if checkpoint is None:
        return "none yet"
    if checkpoint.get("kind") == "step":
        return (f"increment {checkpoint['increment'] + 1}, epoch {checkpoint['epoch'] + 1}, "
                f"step {checkpoint['step']}")
    return f"end of increment {checkpoint['increment'] + 1}"


def find_checkpoint(run_dir: RunDirectory) -> CheckpointChoice:
    """The newest intact checkpoint: ``step.pt`` (mid-increment) if it is newer than the newest
    intact increment-boundary one, else that one. Damaged files on the way are skipped and
    listed, so a truncated latest checkpoint costs only the work since the previous one."""
    boundaries = sorted(run_dir.checkpoint_dir.glob("increment_*.pt"), key=lambda p: -int(p.stem.split("_")[1]))
    choice = CheckpointChoice()
    first_intact = len(boundaries)
    for i, path in enumerate(boundaries):   # a cheap integrity check first: only the chosen file is loaded
        try:
            verify_checkpoint(path)
        except DamagedCheckpoint as exc:
            choice.damaged.append((path, exc.problem))
            continue
        first_intact = i
        break
    # increment_<k>.pt holds the state after increment k (index k - 1): compare by name
    last_done = int(boundaries[first_intact].stem.split("_")[1]) - 1 if first_intact < len(boundaries) else -1
    step_file = run_dir.checkpoint_dir / "step.pt"
    if step_file.is_file():
        try:
            step = load_checkpoint(step_file)
        except DamagedCheckpoint as exc:
            choice.damaged.insert(0, (step_file, exc.problem))
        else:
            if step["increment"] > last_done:
                choice.checkpoint, choice.path = step, step_file
                return choice
    for path in boundaries[first_intact:]:
        try:
            choice.checkpoint, choice.path = load_checkpoint(path), path
            return choice
        except DamagedCheckpoint as exc:
            choice.damaged.append((path, exc.problem))
    return choice


def latest_checkpoint(run_dir: RunDirectory) -> dict | None:
    """The newest intact checkpoint's payload (see :func:`find_checkpoint`), or None."""
    return find_checkpoint(run_dir).checkpoint


def resume_run(path: str | Path, reporter: Reporter | None = None, stop_after: int | None = None,
               changes: dict | None = None, force: bool = False, handle_signals: bool = False) -> Path:
    """Continue a run from its latest intact checkpoint (increment boundary or mid-increment).

    A damaged newer checkpoint is reported in one warning line, renamed to
    ``<name>.damaged`` and recorded in run.json (``checkpoint_fallbacks``); with no intact
    checkpoint left, a ConfigError says what is damaged. Refused while another process holds
    the run's lock.

    ``changes`` (top-level keys and ``section.key`` overrides, e.g. a moved ``data_root``)
    and any edit of ``config.json`` since the checkpoint are refused unless ``force``; a
    forced difference is recorded in run.json (``resumed_with_changes``). ``handle_signals``:
    as in :func:`execute_run`.
    """
    ctx = init_from_env()
    run_dir = RunDirectory(Path(path), read_only=not ctx.is_main)
    reporter = reporter if ctx.is_main and reporter is not None else Reporter(enabled=False)
    for name in ("config.json", "run.json"):
        if not (run_dir.path / name).is_file():
            raise ConfigError(f"--resume {run_dir.path}: not a cl-fir run directory (missing {name})")
    if ctx.is_main:   # held from here until this function returns or raises
        run_dir.lock_for_resume()
        if run_dir.lock.took_over is not None:
            reporter.warn(run_dir.lock.describe_takeover())
    try:
        return _resume(run_dir, ctx, reporter, stop_after, changes, force, handle_signals)
    finally:
        if ctx.is_main:
            run_dir.release_lock()


def _resume(run_dir: RunDirectory, ctx, reporter: Reporter, stop_after: int | None, changes: dict | None,
            force: bool, handle_signals: bool) -> Path:
    saved = readback.read_json(run_dir.path / "config.json")
    info = readback.read_json(run_dir.path / "run.json")
    cfg = config_from_dict(saved, f"{run_dir.path}/config.json")
    if info.get("status") == "complete":
        raise ConfigError(f"--resume {run_dir.path}: the run is already complete")
    run_dir.remove_temporaries()
    choice = find_checkpoint(run_dir)
    checkpoint = choice.checkpoint
    if choice.damaged:
        listed = "; ".join(f"{p} is damaged: {problem}" for p, problem in choice.damaged)
        if checkpoint is None:
            raise ConfigError(f"--resume {run_dir.path}: no intact checkpoint is left ({listed}); start the run "
                              f"again with its options and --overwrite (its settings are in "
                              f"{run_dir.path / 'config.json'})")
        if ctx.is_main:
            reporter.warn(f"{listed}; continuing from {choice.path.name} ({choice.position()})")
    changes = dict(changes or {})
    fixed = [k for k in changes if k in IDENTITY_KEYS]
    if fixed:
        raise ConfigError(f"--resume {run_dir.path}: {', '.join(fixed)} cannot change when resuming (they define "
                          f"the run); start a new run instead")
    apply_overrides(cfg, {k: v for k, v in changes.items() if "." in k}, "--set")
    for key, value in changes.items():
        if "." not in key:
            apply_section(cfg, {key: value}, f"--{key.replace('_', '-')}")
    cfg.validate()
    reference = checkpoint["config"] if checkpoint is not None else saved
    diff = config_diff(reference, cfg.to_dict())
    if diff:
        listed = "; ".join(f"{d['key']}: {d['old']!r} -> {d['new']!r}" for d in diff)
        if not force:
            raise ConfigError(f"--resume {run_dir.path}: the configuration differs from the one the run was "
                              f"checkpointed with ({listed}); pass --force to continue with it (the difference is "
                              f"recorded in run.json)")
        info.setdefault("resumed_with_changes", []).append({"at": now(), "changes": diff})
        run_dir.write_config(cfg.to_dict())
    if choice.damaged and not run_dir.read_only:
        info.setdefault("checkpoint_fallbacks", []).append({
            "at": now(),
            "damaged": [{"file": _relative(run_dir, p), "problem": problem} for p, problem in choice.damaged],
            "resumed_from": _relative(run_dir, choice.path), "position": choice.position()})
        run_dir.write_info(info)   # recorded before the damaged files are moved aside
        for damaged, _ in choice.damaged:   # kept for inspection, out of the way of the next resume
            with contextlib.suppress(OSError):
                damaged.replace(damaged.with_name(damaged.name + ".damaged"))
    if checkpoint is not None:
        info["last_checkpoint"] = {"file": _relative(run_dir, choice.path), "position": choice.position()}
    info.update(status="running", resumed=now())
    info.pop("error", None)
    return _run(cfg, run_dir, info, reporter, checkpoint, stop_after, handle_signals)


def versions() -> dict:
    """The versions of cl-fir and of the libraries that decide its numbers (run.json)."""
    import timm
    import torchvision

    return {"cl_fir": _installed_version("cl-fir"), "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "timm": timm.__version__,
            "avalanche": _installed_version("avalanche-lib"), "numpy": np.__version__}


def _installed_version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _relative(run_dir: RunDirectory, path: Path) -> str:
    return str(path.relative_to(run_dir.path)) if path.is_relative_to(run_dir.path) else str(path)


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
    ctx = init_from_env()
    if ctx.enabled and setup.device.type == "cuda":
        setup.device = torch.device("cuda", ctx.local_rank)
    set_deterministic(cfg.deterministic)
    seed_everything(cfg.seed)
    # where loader images are normalised depends on the device ("auto"); the run's config keeps "auto"
    data_cfg = dataclasses.replace(cfg, transforms=resolve_normalize(cfg.transforms, setup.device))
    scenario = build_scenario(spec, data_cfg, reporter.progress_factory(), strict=cfg.strict)
    seed_everything(cfg.seed)
    model = strategy.build_model(cfg, scenario)
    if cfg.model.weights:   # which weights the run started from: the file and its content hash
        info["weights"] = [load_weights(bb, cfg.model.weights) for bb in _backbones(model)][0]
    model = setup.prepare_model(model)
    if cfg.train.sync_batchnorm and ctx.enabled:   # whole-batch BatchNorm statistics across ranks
        info["sync_batchnorm_layers"] = sync_batchnorm(model)
    if cfg.train.compile:   # in place: parameter names, checkpoints and copies are unchanged
        for backbone in _backbones(model):
            backbone.compile()
    flops, head_flops = forward_flops_per_image(model, cfg.transforms.crop, setup, attribute=scenario.tasks[0])
    cost = CostMeter(setup, flops, head_flops, parameters=sum(p.numel() for p in model.parameters()),
                     replicas=ctx.world_size)
    family = family_of(scenario)(cfg.loss)
    return TrainingLoop(cfg, scenario, strategy, model, family, setup, cost, reporter, on_increment_end, dist=ctx)


def _run(cfg: RunConfig, run_dir: RunDirectory, info: dict, reporter: Reporter, checkpoint: dict | None,
         stop_after: int | None, handle_signals: bool) -> Path:
    spec = load_spec(cfg.scenario)
    init_from_env().barrier()   # every rank has read the run directory before rank 0 writes to it
    info.update(versions=versions())
    run_dir.write_info(info)
    try:
        mid_increment = checkpoint is not None and checkpoint.get("kind") == "step"
        start = 0 if checkpoint is None else checkpoint["increment"] + (0 if mid_increment else 1)
        verb = "cl-fir run" if checkpoint is None else (
            f"cl-fir resume (increment {start + 1}, epoch {checkpoint['epoch'] + 1}, step {checkpoint['step']})"
            if mid_increment else f"cl-fir resume (at increment {start + 1})")
        reporter.log(f"[bold]{verb}[/bold] {cfg.strategy} on {spec.name} (seed {cfg.seed}) -> {run_dir.path}")
        loop = build_loop(cfg, reporter, info=info)
        scenario, cost = loop.scenario, loop.cost
        info["device"] = loop.setup.describe()
        info["distributed"] = loop.dist.describe()
        described = scenario.describe()
        info["tasks"] = described["tasks"]
        for task in info["tasks"]:   # the metric of a uniformly random ranking, beside every result
            task["chance"] = chance_levels(scenario.eval_tasks[task["attribute"]], cfg.eval)
        info["increments"] = described["increments"]
        info["data_root"] = described["data_root"]
        info["protocol"] = described["protocol"]
        info["data"] = described["data"]
        info["label_fraction"] = described["label_fraction"]
        if scenario.label_fraction < 1:
            uses = getattr(loop.strategy, "uses_unlabelled", False)
            info["unlabelled_used"] = uses
            reporter.log(f"label_fraction {100 * scenario.label_fraction:g}%: {cfg.strategy} "
                         + ("also trains on the unlabelled images" if uses else
                            "trains on the labelled rows only (it does not use unlabelled images)"))
        info["parameters"] = cost.parameters
        failures = run_dir.path / "load_failures.txt"
        scenario.log_load_failures_to(failures)
        results = RunResults(scenario.task_names, scenario.tasks, scenario.task_increment,
                             [scenario.eval_tasks[a].num_queries for a in scenario.tasks],
                             metric_names(cfg.eval, scenario.protocol))
        info["primary_metric"] = results.primary
        label = METRIC_LABELS[results.primary]
        data = info["data"]
        if data.get("file_warnings"):
            reporter.log(f"[yellow]label-file warnings[/yellow]: {data['file_warnings']} "
                         f"(e.g. {'; '.join(data['file_warning_examples'][:1])})")
        if data["bad_images"]:
            reporter.log(f"[yellow]skipping {data['bad_images']} of {data['checked_images']} images[/yellow] "
                         f"(missing or unreadable; rows skipped: {data['skipped_rows']}); --strict refuses instead")
        run_dir.write_info(info)

        def on_increment_end(loop: TrainingLoop, inc, inc_results: dict) -> None:
            results.record(inc.index, inc_results)
            strategy_info = loop.strategy.run_info(loop)
            if strategy_info is not None:
                info["strategy_info"] = strategy_info
            info["data"]["load_failures"] = count_load_failures(failures)
            info["increments_done"] = results.increments_done
            if results.increments_done == len(scenario.increments):
                info["status"] = "complete"
                info["finished"] = now()
                reference = find_reference_run(Path(cfg.output_dir), spec.name, cfg.seed, cfg.strategy)
                info["cost_ratio"] = reference.ratios(cost.totals()) if reference else None
            run_dir.write_results(info, results, cost.to_dict())
            path = _checkpoint(run_dir, loop, inc.index, results, cost, cfg,
                               final=results.increments_done == len(scenario.increments))
            info["last_checkpoint"] = {"file": f"checkpoints/{path.name}",
                                       "position": f"end of increment {inc.index + 1}"}
            _unlink(run_dir.checkpoint_dir / "step.pt")
            info.pop("last_step_checkpoint", None)
            run_dir.write_info(info)
            d = results.derived()
            row = ", ".join(f"{scenario.meta.names[a]} {m[results.primary]:.1f}" for a, m in inc_results.items())
            msg = f"  {label} after increment {inc.index + 1}: {row}; seen-task mean {d['final']:.2f}"
            if inc.index:
                msg += f", forgetting {d['forgetting']:.2f}"
            reporter.log(msg)
            if tracker is not None:
                tracker.increment_end(inc.index + 1, dict(zip(scenario.task_names, results.matrix()[-1].tolist())),
                                      d, cost.to_dict()["increments"][-1], cost.totals())

        def on_checkpoint(loop: TrainingLoop) -> None:
            if run_dir.read_only:
                return
            save_checkpoint(run_dir.checkpoint_dir / "step.pt", {
                "kind": "step", **loop.position_state(), "results": results.state_dict(), "config": cfg.to_dict()})
            info["last_step_checkpoint"] = {"increment": loop.increment.index + 1, "epoch": loop.epoch + 1,
                                            "step": loop.step_in_epoch, "iteration": loop.iteration, "at": now()}
            info["last_checkpoint"] = {"file": "checkpoints/step.pt", "position": (
                f"increment {loop.increment.index + 1}, epoch {loop.epoch + 1}, step {loop.step_in_epoch}")}
            run_dir.write_info(info)

        loop.on_increment_end = on_increment_end
        loop.on_checkpoint = on_checkpoint
        if checkpoint is not None:
            if not mid_increment:
                loop.load_state_dict(checkpoint["loop"])
            results.load_state_dict(checkpoint["results"])
            cost.load(checkpoint["cost"])
            info["increments_done"] = results.increments_done   # less than before if a newer one was damaged
        tracker = _tracker(cfg, run_dir, loop, checkpoint, results.increments_done)
        stop = len(scenario.increments) if stop_after is None else min(len(scenario.increments), start + stop_after)
        try:
            with stop_on_signals(loop, reporter) if handle_signals else contextlib.nullcontext():
                loop.run(start, stop, resume=checkpoint if mid_increment else None)
        finally:
            if tracker is not None:
                tracker.close()
        if info["status"] == "complete":
            reporter.log(f"[green]done[/green]: {run_dir.path}")
            reporter.log(ratio_line(cfg, spec.name, info.get("cost_ratio")))
        else:
            info["status"] = "stopped"
            run_dir.write_info(info)
            reporter.log(f"stopped after increment {stop}; continue with: cl-fir run --resume {run_dir.path}")
        return run_dir.path
    except (TrainingError, OutputError) as exc:
        last = info.get("last_checkpoint", {}).get("position", "none yet")
        message = f"{exc}; run {run_dir.path}, last good checkpoint: {last}"
        if isinstance(exc, OutputError):
            message += f"; once it can be written again, continue with: cl-fir run --resume {run_dir.path}"
        exc.args = (message,)
        if not _record_failure(run_dir, info, exc):
            exc.args = (f"{message}; run.json could not be updated either (its status may still say running)",)
        raise
    except BaseException as exc:
        _record_failure(run_dir, info, exc)
        raise


def _tracker(cfg: RunConfig, run_dir: RunDirectory, loop: TrainingLoop, checkpoint: dict | None,
             done_increments: int):
    """The run's experiment tracker (``--log``), listening to the loop's step losses; None
    when off, on ranks other than 0, and on a read-only run folder."""
    if cfg.log != "tensorboard" or not loop.dist.is_main or run_dir.read_only:
        return None
    from cl_fir.report.tensorboard_log import TensorBoardLog

    done_steps = 0 if checkpoint is None else int(checkpoint["loop"]["iteration"])
    tracker = TensorBoardLog(run_dir.path, done_steps, done_increments)
    loop.loss_readback.listener = tracker.step_loss
    return tracker


def _record_failure(run_dir: RunDirectory, info: dict, exc: BaseException) -> bool:
    """Mark the run failed (or interrupted) in run.json; False if that cannot be written either."""
    info["status"] = "failed" if not isinstance(exc, KeyboardInterrupt) else "interrupted"
    info["error"] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
    info["finished"] = now()
    try:
        run_dir.write_info(info)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def stop_on_signals(loop: TrainingLoop, reporter: Reporter):
    """SIGINT/SIGTERM: finish the current step, save a checkpoint, stop (a second signal stops at once)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if loop.stop_requested:
            raise KeyboardInterrupt
        loop.request_stop(signal.Signals(signum).name)
        reporter.log(f"[yellow]{signal.Signals(signum).name}[/yellow]: saving a checkpoint after the current step, "
                     f"then stopping (again to stop at once)")

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def set_deterministic(enabled: bool) -> None:
    """torch's deterministic algorithms (errors on ops that have none), no cuDNN autotuning."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(enabled)
    torch.backends.cudnn.benchmark = False if enabled else torch.backends.cudnn.benchmark


def _backbones(model) -> list[FeatureMapBackbone]:
    return [m for m in model.modules() if isinstance(m, FeatureMapBackbone)]


def _checkpoint(run_dir: RunDirectory, loop: TrainingLoop, increment: int, results: RunResults, cost: CostMeter,
                cfg: RunConfig, final: bool) -> Path:
    """Everything needed to continue after this increment. The new file is verified before it
    replaces anything; the previous increment's is kept as well (a fallback should the newest
    be damaged later) until the run is complete."""
    path = run_dir.checkpoint_dir / f"increment_{increment + 1}.pt"
    save_checkpoint(path, {
        "increment": increment,
        "loop": loop.state_dict(),
        "results": results.state_dict(),
        "cost": cost.to_dict(),
        "rng": rng_state(),
        "config": cfg.to_dict(),
    })
    keep = {path.name} if final else {path.name, f"increment_{increment}.pt"}
    for old in run_dir.checkpoint_dir.glob("increment_*.pt"):
        if old.name not in keep:
            with contextlib.suppress(OSError):   # an old file left over costs only disk space
                old.unlink()
    return path


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise output_error(path, exc) from None
