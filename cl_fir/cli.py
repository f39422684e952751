"""The ``cl-fir`` command line.

Errors a user can cause are printed as one line (``error: ...``) with exit code 2 and no
traceback; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from cl_fir.errors import CLFirError

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Continual-learning benchmark harness for fine-grained fashion image retrieval.")
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
_state = {"debug": False}


def open_consoles() -> None:
    """Make the two consoles again. A console decides on colours and width when it is made,
    from the streams of that moment; a process that sends its streams elsewhere afterwards
    (a sweep's cell, :func:`run_in_fork`) calls this so its log gets plain text."""
    global out, err
    out = Console(soft_wrap=True)
    err = Console(stderr=True, soft_wrap=True)


def run_in_fork(args: list[str]) -> None:
    """``cl-fir <args>`` in a process forked by a sweep's fork server
    (:mod:`cl_fir.runtime.fork_server`), whose streams now go to the cell's log."""
    open_consoles()
    app(args=args, prog_name="cl-fir")


def guarded(fn):
    """Turn user errors into one clear line and a non-zero exit."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except CLFirError as exc:
            if _state["debug"]:
                raise
            err.print(f"[bold red]error:[/bold red] {escape(str(exc))}", highlight=False)
            raise typer.Exit(2) from None
        except OSError as exc:   # the file system refused something no check above foresaw
            if _state["debug"]:
                raise
            where = f"{exc.filename}: " if exc.filename else ""
            err.print(f"[bold red]error:[/bold red] {escape(where + (exc.strerror or str(exc)))}", highlight=False)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err.print("[yellow]interrupted[/yellow]")
            raise typer.Exit(130) from None

    return wrapper


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors.")] = False) -> None:
    _state["debug"] = debug


def _default_strategy() -> str:
    from cl_fir.registry import available_strategies

    return "mcl_fir" if "mcl_fir" in available_strategies() else "finetune"


@app.command()
@guarded
def run(
    strategy: Annotated[Optional[str], typer.Option(help="Strategy name (see `cl-fir list`); default mcl_fir, "
                                                         "or finetune where mcl_fir is not available.")] = None,
    scenario: Annotated[Optional[str], typer.Option(help="Scenario name or path to a scenario .toml "
                                                         "[default: synth-4inc].")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Run seed; every random stream derives from it [default: 0].")] = None,
    epochs: Annotated[Optional[int], typer.Option(help="Epochs per increment (train.epochs).")] = None,
    samples_per_epoch: Annotated[Optional[int], typer.Option(
        help="Doublets per epoch and increment (train.samples_per_epoch).")] = None,
    batch_size: Annotated[Optional[int], typer.Option(help="Doublets per step (train.batch_size).")] = None,
    lr: Annotated[Optional[float], typer.Option(help="Learning rate (train.lr).")] = None,
    output_dir: Annotated[Optional[Path], typer.Option(help="Results root; the run goes to "
                                                            "<output-dir>/<scenario>/<strategy>/<run-id>/ "
                                                            "[default: results].")] = None,
    run_id: Annotated[Optional[str], typer.Option(help="Run folder name (default: seed<N>).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run folder.")] = False,
    device: Annotated[Optional[str], typer.Option(help="auto, cpu, cuda or cuda:N [default: auto].")] = None,
    precision: Annotated[Optional[str], typer.Option(help="auto (bf16 on CUDA, fp32 on CPU), fp32 or bf16 "
                                                          "[default: auto].")] = None,
    num_workers: Annotated[Optional[int], typer.Option(help="Data-loader workers (-1: auto).")] = None,
    weights: Annotated[Optional[Path], typer.Option(help="Backbone starting weights: a local checkpoint, "
                                                         "builtin:NAME (shipped), or timm:TAG (timm's pretrained "
                                                         "weights through the Hugging Face cache, e.g. "
                                                         "timm:resnet50.a1_in1k).")] = None,
    head: Annotated[Optional[str], typer.Option(help="Embedding head (model.head): asen, crt or dnc; head options go in "
                                                     "the model.head_kwargs table of a scenario or run file.")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="Root of real datasets (or CL_FIR_DATA).")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(
        help="Where generated datasets and image checks are cached (or CL_FIR_CACHE; default ~/.cache/cl-fir).")] = None,
    strict: Annotated[bool, typer.Option(help="Refuse to start when an image the scenario uses is missing or "
                                              "unreadable (default: skip and count it).")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override any setting: SECTION.KEY=VALUE, "
                                                                    "e.g. model.embed_dim=32 (repeatable).")] = None,
    opt: Annotated[Optional[list[str]], typer.Option(help="Strategy option KEY=VALUE (repeatable).")] = None,
    resume: Annotated[Optional[Path], typer.Option(help="Continue this run folder from its latest checkpoint "
                                                        "(with its saved configuration).")] = None,
    force: Annotated[bool, typer.Option(help="With --resume: continue even though the configuration changed "
                                             "(e.g. a moved --data-root); the difference is recorded in run.json.")] = False,
    checkpoint_every: Annotated[Optional[int], typer.Option(
        help="Also checkpoint every N optimizer steps (train.checkpoint_every; 0 = at increment ends only).")] = None,
    deterministic: Annotated[bool, typer.Option(help="Use torch's deterministic algorithms (bit-exact reruns; "
                                                     "slower on GPU).")] = False,
    config: Annotated[Optional[Path], typer.Option(help="TOML run file: strategy, scenario, seed, ... at the top, "
                                                        "model/train/loss/eval/transforms tables and an options table "
                                                        "(strategy options); command-line options win over it.")] = None,
    eval_mode: Annotated[Optional[str], typer.Option(
        help="eval.mode: plain, or prioritized (MODC's ranking, recorded beside plain as prio_* metrics).")] = None,
    query_labels: Annotated[Optional[str], typer.Option(
        help="eval.query_labels for prioritized retrieval: pseudo (nearest stored centroid) or known "
             "(uses the query's true value at test time).")] = None,
    prio_topk: Annotated[Optional[int], typer.Option(
        help="eval.prio_topk: a candidate is ranked first when the query's class is among its k nearest "
             "centroids (1 or 2 in MODC).")] = None,
    log: Annotated[Optional[str], typer.Option(
        help="Experiment tracker: none or tensorboard (event files under <run>/tensorboard/: step losses, "
             "matrix cells, forgetting, average incremental metric, cost) [default: none].")] = None,
    quiet: Annotated[bool, typer.Option(help="No progress output.")] = False,
) -> None:
    """Train a strategy on a scenario, evaluating every seen task after each increment."""
    from cl_fir.config import parse_assignments
    from cl_fir.engine.progress import Reporter
    from cl_fir.runner import execute_run, resolve_config, resume_run

    reporter = Reporter(enabled=not quiet, console=err)
    if resume is not None:
        fixed = {"--strategy": strategy, "--scenario": scenario, "--seed": seed, "--output-dir": output_dir,
                 "--run-id": run_id, "--overwrite": overwrite or None, "--opt": opt or None, "--config": config}
        given = [name for name, value in fixed.items() if value is not None]
        if given:
            raise CLFirError(f"--resume continues a run with its saved configuration; it cannot be combined "
                             f"with {', '.join(given)} (start a new run instead)")
        changes = parse_assignments(set_, "--set")
        for key, value in (("train.epochs", epochs), ("train.samples_per_epoch", samples_per_epoch),
                           ("train.batch_size", batch_size), ("train.lr", lr), ("train.num_workers", num_workers),
                           ("train.checkpoint_every", checkpoint_every), ("model.weights", weights),
                           ("model.head", head), ("eval.mode", eval_mode), ("eval.query_labels", query_labels),
                           ("eval.prio_topk", prio_topk),
                           ("device", device), ("precision", precision), ("data_root", data_root),
                           ("cache_dir", cache_dir), ("strict", strict or None),
                           ("deterministic", deterministic or None), ("log", log)):
            if value is not None:
                changes[key] = str(value) if isinstance(value, Path) else value
        path = resume_run(resume, reporter=reporter, changes=changes, force=force, handle_signals=True)
        _print_run_row(path)
        return

    from cl_fir.config import read_run_file

    file_top, file_overrides, file_options = read_run_file(config) if config is not None else ({}, {}, {})
    overrides = {**file_overrides, **parse_assignments(set_, "--set")}
    for key, value in (("train.epochs", epochs), ("train.samples_per_epoch", samples_per_epoch),
                       ("train.batch_size", batch_size), ("train.lr", lr), ("train.num_workers", num_workers),
                       ("train.checkpoint_every", checkpoint_every), ("model.head", head),
                       ("eval.mode", eval_mode), ("eval.query_labels", query_labels), ("eval.prio_topk", prio_topk),
                       ("model.weights", str(weights) if weights else None)):
        if value is not None:
            overrides[key] = value
    cli_top = {"seed": seed, "device": device, "precision": precision,
               "output_dir": str(output_dir) if output_dir else None, "run_id": run_id,
               "data_root": str(data_root) if data_root else None, "cache_dir": str(cache_dir) if cache_dir else None,
               "strict": strict or None, "deterministic": deterministic or None, "log": log}
    top = {**file_top, **{k: v for k, v in cli_top.items() if v is not None}}
    chosen_strategy = strategy or top.pop("strategy", None) or _default_strategy()
    chosen_scenario = scenario or top.pop("scenario", None) or "synth-4inc"
    top.pop("strategy", None)
    top.pop("scenario", None)
    cfg = resolve_config(chosen_strategy, chosen_scenario, overrides,
                         {**file_options, **parse_assignments(opt, "--opt")}, **top)
    _print_run_row(execute_run(cfg, overwrite=overwrite, reporter=reporter, handle_signals=True))


def _list_damaged(damaged: list[tuple[Path, str]]) -> None:
    """One ``warning:`` line per run that is skipped because it does not read back intact."""
    for _, problem in damaged:
        err.print(f"[yellow]warning:[/yellow] skipped a damaged run: {escape(problem)}", highlight=False)


def _print_run_row(path: Path) -> None:
    import os

    from cl_fir.report.compare import compare, comparison_markdown
    from cl_fir.report.run_dir import load_run

    if int(os.environ.get("RANK", "0")) != 0:   # data-parallel ranks other than 0 print nothing
        return
    rows = compare([load_run(path)])
    if rows and rows[0].get("budget_reference"):   # joint: a point of a budget curve, not a compared strategy
        r = rows[0]
        budget = f"{int(r['doublets'])} doublets" if r["doublets"] else "static's budget"
        out.print(f"joint at {budget}: final {r['metric']} {r['final']:.2f} after {r['train_flops']:.3g} training "
                  "FLOPs (a budget-curve point: cl-fir compare places the strategies on the curve)",
                  highlight=False, markup=False)
        return
    out.print(comparison_markdown(rows), highlight=False, markup=False)


@app.command("list")
@guarded
def list_(what: Annotated[str, typer.Argument(help="strategies, scenarios or all.")] = "all",
          verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show each strategy's task families "
                                                                       "and options (type, default, help).")] = False,
          ) -> None:
    """List the registered strategies and the shipped scenarios."""
    if what not in ("all", "strategies", "scenarios"):
        raise CLFirError(f"list {what!r}: expected strategies, scenarios or all")
    if what in ("all", "strategies"):
        from cl_fir.registry import available_strategies, describe_options

        out.print("[bold]strategies[/bold]")
        for name, cls in available_strategies().items():
            out.print(f"  {name:<20} {cls.summary}", highlight=False, markup=False)
            if verbose:
                out.print(f"      families: {', '.join(cls.families)}; defined in {cls.__module__}",
                          highlight=False, markup=False)
                for o in describe_options(cls):
                    out.print(f"      {o['name']} ({o['type']}, default {o['default']}): {o['help'] or '-'}",
                              highlight=False, markup=False)
    if what in ("all", "scenarios"):
        from cl_fir.scenario import available_scenarios, load_spec

        out.print("[bold]scenarios[/bold]")
        for name in sorted(available_scenarios()):
            desc = " ".join(load_spec(name).description.split())
            out.print(f"  {name:<16} {desc}", highlight=False, markup=False)


@app.command("compare")
@guarded
def compare_(
    run_dirs: Annotated[Optional[list[Path]], typer.Argument(help="Run folders to compare.")] = None,
    root: Annotated[Optional[Path], typer.Option(help="Compare every run found under this folder.")] = None,
    scenario: Annotated[Optional[str], typer.Option(help="Only runs of this scenario.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="Where to write comparison.{md,csv,tex}, "
                                                                  "comparison_tasks.csv, plots/ and report.html "
                                                                  "(default: --root, or .)")] = None,
    include_partial: Annotated[bool, typer.Option(help="Also compare runs that did not finish.")] = False,
) -> None:
    """Compare runs: one row per experiment (seeds as mean ± std), per-task tables, plots and an HTML report."""
    from cl_fir.report.outputs import write_comparison
    from cl_fir.report.run_dir import find_runs, load_runs

    paths = list(run_dirs or [])
    if root is not None:
        if not root.is_dir():
            raise CLFirError(f"--root {root}: not a folder")
        paths += find_runs(root)
    if not paths:
        raise CLFirError("nothing to compare: give run folders or --root DIR")
    runs, damaged = load_runs(paths)
    if not runs and len(damaged) == 1:
        raise CLFirError(f"nothing to compare: {damaged[0][1]}")
    _list_damaged(damaged)
    if not runs:
        raise CLFirError(f"nothing to compare: all {len(damaged)} runs are damaged or not runs (listed above)")
    if scenario:
        runs = [r for r in runs if r.scenario == scenario]
    skipped = [r for r in runs if not r.complete]
    if not include_partial:
        runs = [r for r in runs if r.complete]
    for r in skipped:
        err.print(f"[yellow]note:[/yellow] {r.path} is {r.info.get('status')}; "
                  f"{'included' if include_partial else 'skipped (use --include-partial)'}")
    if not runs:
        raise CLFirError("no complete runs to compare")
    dest = out_dir or root or Path(".")
    _, markdown, written = write_comparison(runs, dest)
    out.print(markdown, highlight=False, markup=False)
    err.print(f"wrote {len(written)} files to {dest}: comparison.md/.csv/.tex, comparison_tasks.csv, plots/; "
              f"open the report: {(dest / 'report.html').resolve()}")


data_app = typer.Typer(no_args_is_help=True, help="Check datasets on disk.")
app.add_typer(data_app, name="data")


@data_app.command("verify")
@guarded
def data_verify(
    name: Annotated[str, typer.Argument(help="fashionai, darn, deepfashion, zappos50k, fashioniq, shoes, "
                                             "fashion200k, or a scenario name "
                                             "(checks every dataset it reads).")],
    data_root: Annotated[Optional[Path], typer.Option(help="Root of real datasets (or CL_FIR_DATA).")] = None,
    quick: Annotated[bool, typer.Option(help="Only read image headers instead of decoding every image.")] = False,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the full report as JSON.")] = None,
    cache_dir: Annotated[Optional[Path], typer.Option(help="Where image-check results are cached "
                                                           "(or CL_FIR_CACHE).")] = None,
    max_listed: Annotated[int, typer.Option(help="Problems and bad images listed per category.")] = 10,
) -> None:
    """Check a dataset's layout, line counts, labels and images; exit 0 only if it is usable.

    Prints what a run would skip (rows whose image is missing or unreadable). Exit codes:
    0 usable, 1 not usable, 2 bad invocation.
    """
    import os

    from cl_fir.files import atomic_io
    from cl_fir.data.synth_cache import default_cache_dir
    from cl_fir.scenario.verify import report_text, resolve_names, verify
    from cl_fir.engine.progress import Reporter

    root = data_root or (Path(os.environ["CL_FIR_DATA"]) if os.environ.get("CL_FIR_DATA") else None)
    if root is None:
        raise CLFirError("give --data-root DIR (or set CL_FIR_DATA): the folder holding meta.json and the "
                         "dataset folders")
    if not root.is_dir():
        raise CLFirError(f"--data-root {root}: not a folder")
    reporter = Reporter(console=err)
    reports = []
    for reader, key in resolve_names(name):
        report = verify(reader, key, root, "header" if quick else "decode", cache_dir or default_cache_dir(),
                        reporter.progress_factory())
        out.print(report_text(report, max_listed), highlight=False, markup=False)
        reports.append(report)
    if json_out is not None:
        atomic_io.write_json(json_out, {"reports": [r.to_dict() for r in reports]})
        err.print(f"wrote {json_out}")
    if not all(r.usable for r in reports):
        raise typer.Exit(1)


@data_app.command("shift")
@guarded
def data_shift(
    scenario: Annotated[str, typer.Argument(help="Scenario name or .toml path.")],
    images: Annotated[int, typer.Option(help="Training images per increment (drawn at random).")] = 400,
    seed: Annotated[int, typer.Option(help="Seed of the draw and of the cross-validation folds.")] = 0,
    data_root: Annotated[Optional[Path], typer.Option(help="Root of real datasets (or CL_FIR_DATA).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a setting, e.g. "
                                                                    "model.weights=FILE (repeatable).")] = None,
) -> None:
    """How much the input distribution shifts between increments: the cross-validated accuracy
    of a domain classifier on the starting backbone's pooled features (50% = no shift)."""
    from cl_fir.analysis.input_shift import increment_features, shift_markdown, shift_matrix
    from cl_fir.config import parse_assignments

    overrides = parse_assignments(set_, "--set")
    if data_root is not None:
        import os

        os.environ["CL_FIR_DATA"] = str(data_root)
    names, features = increment_features(scenario, overrides, images, seed)
    out.print(shift_markdown(names, shift_matrix(features, seed)), highlight=False, markup=False)


@app.command()
@guarded
def pretrain(
    output: Annotated[Path, typer.Option(help="Where to write the weights (a state dict with timm keys, "
                                              "readable by --weights).")],
    arch: Annotated[str, typer.Option(help="timm architecture (the scenario's model.backbone).")] = "test_resnet",
    image_size: Annotated[int, typer.Option(help="Side of the rendered images, px.")] = 64,
    images: Annotated[int, typer.Option(help="Pretraining images rendered from the pretrain split.")] = 10000,
    epochs: Annotated[int, typer.Option(help="Epochs over them.")] = 6,
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 64,
    lr: Annotated[float, typer.Option(help="Adam learning rate (cosine decay to 0).")] = 3e-3,
    seed: Annotated[int, typer.Option(help="Seed of the images, the order and the initial weights.")] = 0,
    threads: Annotated[int, typer.Option(help="Torch threads (the result depends on it bit for bit).")] = 1,
) -> None:
    """Pretrain a backbone for the synthetic scenarios: the role ImageNet plays for real data.

    The network classifies garment type, colour and pattern of images that no scenario uses
    (none of them is a retrieved attribute). Deterministic on a given machine and thread count.
    """
    from cl_fir.engine.progress import Reporter
    from cl_fir.pretraining import PretrainConfig, pretrain as run_pretraining, save_weights

    reporter = Reporter(console=err)
    cfg = PretrainConfig(arch=arch, image_size=image_size, images=images, epochs=epochs, batch_size=batch_size,
                         lr=lr, seed=seed, threads=threads)
    state, report = run_pretraining(cfg, log=reporter.log, progress_factory=reporter.progress_factory())
    digest = save_weights(output, state, report)
    out.print(f"wrote {output} (sha256 {digest}); use it with --weights {output}", highlight=False, markup=False)


@app.command()
@guarded
def curves(
    scenario: Annotated[str, typer.Option(help="Scenario name or .toml path.")] = "synth-4inc",
    steps: Annotated[str, typer.Option(help="Comma-separated step counts to evaluate at (0 = the start).")]
    = "0,4,8,16,32,64,128",
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds or a range (tuning seeds by default).")]
    = "100-102",
    tasks: Annotated[Optional[str], typer.Option(help="Comma-separated tasks (default: all of the scenario).")] = None,
    output_dir: Annotated[Path, typer.Option(help="Where curves.csv/.md/.png go.")] = Path("results/curves"),
    split: Annotated[Optional[str], typer.Option(help="Evaluation split: valid (default: the curves are a design "
                                                      "check, kept off the test split like tuning) or test.")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="Override a setting for every curve, e.g. "
                                                                    "model.weights=none (repeatable).")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="Root of real datasets (or CL_FIR_DATA).")] = None,
) -> None:
    """Each task trained alone from the scenario's start: its metric against optimizer steps,
    beside one increment's budget (does every task reach its plateau within it?)."""
    import os

    from cl_fir.analysis.learning_curves import increment_budget, plateau_report, task_curve, write_curves
    from cl_fir.config import parse_assignments
    from cl_fir.engine.progress import Reporter
    from cl_fir.evaluation.evaluator import METRIC_LABELS, metric_names
    from cl_fir.runner import resolve_config
    from cl_fir.scenario import build_scenario, load_spec

    if data_root is not None:
        os.environ["CL_FIR_DATA"] = str(data_root)
    overrides = parse_assignments(set_, "--set")
    split = split or str(overrides.pop("eval.split", "valid"))
    if split not in ("valid", "test"):
        raise CLFirError(f"--split: expected valid or test, got {split!r}")
    step_list = sorted({int(x) for x in _split(steps, "--steps")})
    if not step_list or step_list[0] < 0:
        raise CLFirError(f"--steps {steps!r}: expected non-negative step counts")
    cfg = resolve_config("finetune", scenario, overrides)
    built = build_scenario(load_spec(scenario), cfg)
    names = _split(tasks, "--tasks") if tasks else built.task_names
    budget = increment_budget(cfg)
    reporter = Reporter(console=err)
    reporter.log(f"one increment's budget on {built.name}: {budget} steps; curves up to {max(step_list)} steps, "
                 f"on the {split} split")
    points = []
    for seed in _parse_seeds(seeds):
        for task in names:
            points += task_curve(scenario, task, step_list, seed, overrides, log=reporter.log, split=split)
    metric = METRIC_LABELS.get(metric_names(cfg.eval, built.protocol)[0], "metric")
    written = write_curves(points, budget, output_dir, metric, split)
    out.print((output_dir / "curves.md").read_text(), highlight=False, markup=False)
    if budget in step_list:
        for task, r in plateau_report(points, budget).items():
            out.print(f"{task}: {r['budget']:.2f} at the budget, {r['longest']:.2f} at {max(step_list)} steps, "
                      f"{r['over_chance_at_budget']:.2f} over chance", highlight=False, markup=False)
    err.print(f"wrote {', '.join(str(p) for p in written)}")


@app.command()
@guarded
def sweep(
    strategies: Annotated[str, typer.Option(help="Comma-separated strategies (names or path.py:Class).")],
    scenarios: Annotated[str, typer.Option(help="Comma-separated scenarios (names or .toml paths).")],
    seeds: Annotated[str, typer.Option(help="Comma-separated seeds, or a range such as 0-2.")] = "0",
    output_dir: Annotated[Path, typer.Option(help="Results root for every cell.")] = Path("results"),
    jobs: Annotated[int, typer.Option(help="Cells run at the same time.")] = 1,
    backend: Annotated[str, typer.Option(help="local (processes on this machine) or ray (Ray tasks; needs the optional "
                                              "ray extra of cl-fir).")] = "local",
    ray_address: Annotated[Optional[str], typer.Option(help="Ray cluster address (or RAY_ADDRESS); default: "
                                                            "a local Ray instance.")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="Root of real datasets (or CL_FIR_DATA).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="SECTION.KEY=VALUE for every cell "
                                                                    "(repeatable).")] = None,
    opt: Annotated[Optional[list[str]], typer.Option(help="Strategy option KEY=VALUE for every cell (repeatable).")] = None,
    log: Annotated[Optional[str], typer.Option(help="Experiment tracker of every new cell: none or tensorboard "
                                                    "(resumed cells keep their own).")] = None,
    compare_after: Annotated[bool, typer.Option("--compare/--no-compare",
                                                help="Compare the sweep's runs at the end.")] = True,
) -> None:
    """Run strategies x scenarios x seeds, one process per cell.

    Complete cells are skipped, interrupted ones resumed, and a failed cell does not stop the others.
    """
    from cl_fir.report.summary import markdown_table
    from cl_fir.sweep import execute, plan, prepare_scenarios, summary_rows

    extra = [a for item in (set_ or []) for a in ("--set", item)] + [a for item in (opt or []) for a in ("--opt", item)]
    if data_root is not None:
        extra += ["--data-root", str(data_root)]
    if log is not None:
        extra += ["--log", log]
    sweep_plan = plan(_split(strategies, "--strategies"), _split(scenarios, "--scenarios"), _parse_seeds(seeds),
                      output_dir, extra)
    counts = {a: sum(c.action == a for c in sweep_plan.cells) for a in ("run", "resume", "skip")}
    err.print(f"sweep: {len(sweep_plan.cells)} cells ({counts['run']} to run, {counts['resume']} to resume, "
              f"{counts['skip']} complete), {jobs} at a time, backend {backend}; logs in {output_dir / 'sweep_logs'}")

    def on_update(cell, cells) -> None:
        done = sum(c.status == "complete" for c in cells)
        failed = sum(c.status == "failed" for c in cells)
        running = sum(c.status == "running" for c in cells)
        if cell.status == "running":
            err.print(f"  start  {escape(cell.label)} ({cell.action})", highlight=False)
        else:
            mark = "[green]done[/green]  " if cell.status == "complete" else "[red]FAILED[/red]"
            err.print(f"  {mark} {escape(cell.label)} in {cell.seconds:.0f} s"
                      + (f": {escape(cell.message)}" if cell.status == "failed" else "")
                      + f"  [{done}/{len(cells)} done, {running} running, {failed} failed]", highlight=False)

    if backend == "local":
        prepare_scenarios(sweep_plan, str(data_root) if data_root else None)
    cells = execute(sweep_plan, jobs, backend, ray_address, on_update)
    out.print(markdown_table(["scenario", "strategy", "seed", "action", "status", "seconds", "note"],
                             summary_rows(cells)), highlight=False, markup=False)
    complete = [c.run_dir for c in cells if c.status == "complete"]
    runs = []
    if compare_after and complete:
        from cl_fir.report.run_dir import load_runs

        runs, damaged = load_runs(complete)
        _list_damaged(damaged)
    if runs:
        from cl_fir.report.outputs import write_comparison

        _, markdown, written = write_comparison(runs, output_dir)
        out.print("")
        out.print(markdown, highlight=False, markup=False)
        err.print(f"wrote {len(written)} files to {output_dir} (report.html, comparison.*, plots/)")
    failed = [c for c in cells if c.status == "failed"]
    if failed:
        err.print(f"[red]{len(failed)} cell(s) failed[/red]; see their logs in {output_dir / 'sweep_logs'}; "
                  f"run the same sweep again to retry them (complete cells are skipped)")
        raise typer.Exit(1)


@app.command()
@guarded
def tune(
    strategy: Annotated[str, typer.Option(help="Strategy name or path.py:Class.")],
    scenario: Annotated[str, typer.Option(help="Scenario name or .toml path.")],
    grid: Annotated[Optional[list[str]], typer.Option(help="A grid axis KEY=V1,V2,...: a strategy option, or "
                                                           "SECTION.KEY for a setting (repeatable; every "
                                                           "combination is run).")] = None,
    seeds: Annotated[str, typer.Option(help="Tuning seeds (never the reported ones).")] = "100-102",
    select: Annotated[str, typer.Option(help="Selection metric on the valid split: final or avg_incremental.")]
    = "final",
    output_dir: Annotated[Path, typer.Option(help="Where the tuning runs and tuning.md/.json go.")]
    = Path("results/tuning"),
    jobs: Annotated[int, typer.Option(help="Runs at the same time.")] = 1,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="SECTION.KEY=VALUE for every run "
                                                                    "(repeatable).")] = None,
    opt: Annotated[Optional[list[str]], typer.Option(help="Strategy option KEY=VALUE for every run (repeatable).")]
    = None,
    data_root: Annotated[Optional[Path], typer.Option(help="Root of real datasets (or CL_FIR_DATA).")] = None,
) -> None:
    """Choose a strategy's hyper-parameters: every grid configuration x tuning seed on the valid split."""
    from cl_fir.sweep import execute, prepare_scenarios
    from cl_fir.tuning import parse_grid, plan_tuning, summarise, tuning_markdown, write_tuning

    configurations = parse_grid(grid)
    seed_list = _parse_seeds(seeds)
    extra = [a for item in (set_ or []) for a in ("--set", item)] + [a for item in (opt or []) for a in ("--opt", item)]
    if data_root is not None:
        extra += ["--data-root", str(data_root)]
    plan_ = plan_tuning(strategy, scenario, configurations, seed_list, output_dir, extra)
    err.print(f"tune: {len(configurations)} configurations x {len(seed_list)} seeds = {len(plan_.cells)} runs on "
              f"the valid split ({sum(c.action == 'skip' for c in plan_.cells)} already complete)")
    prepare_scenarios(plan_, str(data_root) if data_root else None)

    def on_update(cell, cells) -> None:
        if cell.status != "running":
            err.print(f"  {cell.status:8s} {escape(cell.run_dir.name)} in {cell.seconds:.0f} s"
                      + (f": {escape(cell.message)}" if cell.status == "failed" else ""), highlight=False)

    execute(plan_, jobs, "local", None, on_update)
    rows = summarise(plan_, configurations, select)
    base = plan_.cells[0].run_dir.parent
    write_tuning(base, plan_.cells[0].run_dir.parent.name, plan_.cells[0].run_dir.parent.parent.name, rows,
                 seed_list, select)
    out.print(tuning_markdown(base.name, base.parent.name, rows, seed_list, select), highlight=False, markup=False)
    err.print(f"wrote {base / 'tuning.md'} and tuning.json")
    if any(c.status == "failed" for c in plan_.cells):
        raise typer.Exit(1)


@app.command()
@guarded
def budget(
    scenario: Annotated[str, typer.Option(help="Scenario name or .toml path.")] = "synth-4inc",
    factors: Annotated[str, typer.Option(help="Budgets as factors of static's training at the last increment "
                                              "(comma-separated numbers or fractions such as 1/16; log-spaced, the largest at or "
                                              "past the plateau).")]
    = "0.0625,0.125,0.25,0.5,1,2,4",
    seeds: Annotated[str, typer.Option(help="Seeds (the reporting seeds of the strategies it is compared with).")]
    = "0-4",
    output_dir: Annotated[Path, typer.Option(help="Results root: the strategies' runs compared with the curve "
                                                  "should be under the same folder.")] = Path("results"),
    jobs: Annotated[int, typer.Option(help="Runs at the same time.")] = 1,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="SECTION.KEY=VALUE for every run "
                                                                    "(repeatable).")] = None,
    data_root: Annotated[Optional[Path], typer.Option(help="Root of real datasets (or CL_FIR_DATA).")] = None,
) -> None:
    """Joint training's budget curve: one model trained from the initial weights on all tasks at
    several budgets; `cl-fir compare` then places every strategy on it (MAP at equal FLOPs)."""
    from cl_fir.budget_runs import budgets, plan_budgets, static_final_doublets
    from cl_fir.config import parse_assignments
    from cl_fir.runner import resolve_config
    from cl_fir.sweep import execute, prepare_scenarios

    overrides = parse_assignments(set_, "--set")
    scale = _parse_factors(factors)
    root = str(data_root) if data_root else None
    base = static_final_doublets(scenario, overrides, root)
    batch = resolve_config("joint", scenario, overrides).train.batch_size
    doublets = budgets(scale, base, batch)
    extra = [a for item in (set_ or []) for a in ("--set", item)] + (["--data-root", root] if root else [])
    plan_ = plan_budgets(scenario, doublets, _parse_seeds(seeds), output_dir, extra)
    err.print(f"budget: joint training at {', '.join(map(str, doublets))} doublets (static's last training: {base}) "
              f"x {len(_parse_seeds(seeds))} seeds = {len(plan_.cells)} runs "
              f"({sum(c.action == 'skip' for c in plan_.cells)} already complete)")
    prepare_scenarios(plan_, root)

    def on_update(cell, cells) -> None:
        if cell.status != "running":
            err.print(f"  {cell.status:8s} {escape(cell.run_dir.name)} in {cell.seconds:.0f} s"
                      + (f": {escape(cell.message)}" if cell.status == "failed" else ""), highlight=False)

    execute(plan_, jobs, "local", None, on_update)
    failed = [c for c in plan_.cells if c.status == "failed"]
    err.print(f"done; compare the strategies with the curve: cl-fir compare --root {output_dir}")
    if failed:
        raise typer.Exit(1)


def _split(text: str, option: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    if not items:
        raise CLFirError(f"{option}: expected a comma-separated list, got {text!r}")
    return items


def _parse_factors(text: str) -> list[float]:
    """``0.25,1,2`` or ``1/16,1/4,1``: positive numbers or fractions."""
    from fractions import Fraction

    values = []
    for item in _split(text, "--factors"):
        try:
            value = Fraction(item)
        except (ValueError, ZeroDivisionError):
            value = None
        if value is None or value <= 0:
            raise CLFirError(f"--factors: expected positive numbers or fractions such as 0.5 or 1/16, got {item!r}")
        values.append(float(value))
    return values


def _parse_seeds(text: str) -> list[int]:
    """``0,1,2`` or ``0-2`` (or a mix); duplicates dropped, order kept."""
    import re

    seeds: list[int] = []
    for part in _split(text, "--seeds"):
        span = re.fullmatch(r"(\d+)-(\d+)", part)
        if span:
            seeds += list(range(int(span[1]), int(span[2]) + 1))
        elif re.fullmatch(r"-?\d+", part):
            seeds.append(int(part))
        else:
            raise CLFirError(f"--seeds: expected integers such as 0,1,2 or a range such as 0-2, got {part!r}")
    return list(dict.fromkeys(seeds))


@app.command()
@guarded
def bench(
    output: Annotated[Path, typer.Option(help="Where to write the JSON results.")] = Path("results/bench.json"),
    only: Annotated[str, typer.Option(help="Comma-separated subset of: map, train, loader, gallery, ablation "
                                            "(default: map, train, loader, and gallery on a GPU; ablation: where "
                                            "the harness step's overhead goes).")] = "",
    backbone: Annotated[str, typer.Option(help="timm backbone for the train benchmark (resnet50 on a GPU).")] = "",
    image_size: Annotated[int, typer.Option(help="Train benchmark image size (0: 224 on GPU, 112 on CPU).")] = 0,
    batch_size: Annotated[int, typer.Option(help="Train benchmark doublets per step (0: 128 on GPU, 16 on CPU).")] = 0,
    steps: Annotated[int, typer.Option(help="Timed optimizer steps per repeat (0: 50 on GPU, 5 on CPU).")] = 0,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[str, typer.Option(help="auto (bf16 on CUDA), fp32 or bf16.")] = "auto",
    compile: Annotated[bool, typer.Option(help="Compile both models' backbones (torch.compile) in the train "
                                                "benchmark, as train.compile does in a run.")] = False,
    loader_images: Annotated[int, typer.Option(help="JPEGs in the loader benchmark (0: 512, or 256 per core "
                                                      "where there are more than 2).")] = 0,
) -> None:
    """Benchmarks as ratios against a reference implementation, side by side in one run."""
    import torch

    from cl_fir.files import atomic_io
    from cl_fir.bench import (bench_loader, bench_map, bench_map_gallery, bench_train, bench_train_ablation,
                              default_worker_counts)

    gpu = torch.cuda.is_available() and device != "cpu"
    parts = {p.strip() for p in only.split(",") if p.strip()} if only else \
        ({"map", "train", "loader", "gallery"} if gpu else {"map", "train", "loader"})
    unknown = parts - {"map", "train", "loader", "gallery", "ablation"}
    if unknown or not parts:
        raise CLFirError(f"--only: expected a comma-separated subset of map, train, loader, gallery, ablation, "
                         f"got {only!r}")
    results = []
    if "map" in parts:
        res = bench_map()
        out.print(f"MAP@all, FashionAI test size ({res['queries']} queries x {res['candidates']} candidates, "
                  f"{res['dim']}-d, 8 attributes):")
        out.print(f"  harness (vectorised, chunked) {res['harness_seconds']:.3f} s | per-query NumPy "
                  f"{res['naive_numpy_seconds']:.3f} s | speed-up {res['speedup']:.1f}x | "
                  f"MAP {100 * res['map_harness']:.4f} vs {100 * res['map_naive']:.4f} "
                  f"(max |diff| {res['max_abs_difference']:.2e})", highlight=False)
        for name, row in res["gpu"].items():
            out.print(f"  harness on the GPU, {name}: {row['seconds']:.4f} s | speed-up vs NumPy "
                      f"{row['speedup_vs_naive']:.0f}x | max |diff| {row['max_abs_difference']:.2e}", highlight=False)
        results.append(res)
    if "gallery" in parts:
        res = bench_map_gallery(device="cuda" if gpu else "cpu")
        out.print(f"MAP@all, one large gallery ({res['queries']} queries x {res['candidates']} candidates, "
                  f"{res['dim']}-d) on {res['device']}, per chunk size:")
        for row in res["rows"]:
            mem = f" | peak {row['peak_extra_bytes'] / 2**20:.0f} MiB" if "peak_extra_bytes" in row else ""
            out.print(f"  chunk {row['chunk_elements']:>9} elements: {row['seconds']:.3f} s{mem} | "
                      f"max |diff| vs first {row['max_abs_difference_vs_first']:.1e}", highlight=False)
        results.append(res)
    train_args = (backbone or ("resnet50" if gpu else "resnet18"), image_size or (224 if gpu else 112),
                  batch_size or (128 if gpu else 16), steps or (50 if gpu else 5))
    if "train" in parts:
        res = bench_train(*train_args, device=device, precision=precision, compile=compile)
        out.print(f"Training step, {res['backbone']} {res['image_size']} px, {res['images_per_step']} images/step, "
                  f"{res['precision']} on {res['device']}{', compiled' if compile else ''}:")
        out.print(f"  harness loop {res['harness_images_per_s']:.1f} img/s | bare PyTorch loop "
                  f"{res['bare_images_per_s']:.1f} img/s | harness overhead {100 * res['harness_overhead']:+.1f}%",
                  highlight=False)
        results.append(res)
    if "ablation" in parts:
        res = bench_train_ablation(*train_args, device=device, precision=precision, compile=compile)
        out.print(f"Training step ablation, {res['backbone']} {res['image_size']} px, {res['images_per_step']} "
                  f"images/step, {res['precision']} on {res['device']} (best of {res['repeats']}, alternating order):")
        for row in res["rows"]:
            out.print(f"  {row['variant']:<36} {row['images_per_s']:9.1f} img/s  {100 * row['overhead_vs_bare']:+6.1f}%"
                      f" vs bare", highlight=False)
        results.append(res)
    if "loader" in parts:
        counts = default_worker_counts()
        res = bench_loader(images=loader_images or (512 if max(counts) <= 2 else 128 * max(counts)), workers=counts,
                           device=device)
        out.print(f"Data loader, {res['images']} JPEGs -> train transform {res['crop']} px, images/s (per worker); "
                  f"until on {res['device']}; 'device' decodes and transforms each batch there, "
                  f"'pil_draft_uint8' only normalises there:")
        table = Table("source px", "decoder", *[f"{w} workers" for w in counts], box=None)
        for size in res["source_sizes"]:
            for decoder in dict.fromkeys(r["decoder"] for r in res["rows"]):
                cells = {r["workers"]: r for r in res["rows"] if r["source_size"] == size and r["decoder"] == decoder}
                table.add_row(str(size), decoder, *[f"{cells[w]['images_per_s']:.0f} "
                                                    f"({cells[w]['images_per_s_per_worker']:.0f})" for w in counts])
        out.print(table)
        results.append(res)
    atomic_io.write_json(output, {"benchmarks": results})
    err.print(f"wrote {output}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
