"""Compare runs: one row per experiment (scenario, strategy and settings), seeds aggregated.

Every number is derived from the runs' matrices (``matrix_metrics``) and cost files. Means
come with the half-width of their 95% Student-t interval over seeds, and each experiment's
final MAP is compared with finetune's, the best continual strategy's and static's by a
paired t-test over the seeds both have (:mod:`cl_fir.report.statistics`). Every task's
chance level (``run.json``) is carried along: ``final - chance`` and the number of tasks
whose final value is within :data:`AT_CHANCE` points of chance. The objective each
experiment trains with is named, and experiments that train with another objective than
the rest of their scenario are flagged. The cost ratio of a run is its training cost
divided by that of the ``static`` run of the same scenario and seed, in image passes (and
FLOPs and training seconds).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
import numpy as np

from cl_fir.config import ARCH_ONLY_MODEL_FIELDS
from cl_fir.evaluation import matrix_metrics
from cl_fir.evaluation.evaluator import METRIC_LABELS
from cl_fir.report import budget_curve
from cl_fir.report.cost_ratio import REFERENCE_STRATEGY, cost_ratios
from cl_fir.report.run_dir import LoadedRun
from cl_fir.report.statistics import LEVEL, mean_ci, paired_t_test
from cl_fir.report.summary import human_count, markdown_table

#: A final value within this many points of its task's chance level is "at chance": not a result.
AT_CHANCE = 2.0
#: The metric the paired tests compare (final unweighted MAP over all tasks).
TESTED = "final"
#: Strategies whose rows are the lower reference and the (cumulative) upper reference.
FINETUNE = "finetune"

COLUMNS = [
    ("avg_incremental", "avg inc."),
    ("final", "final"),
    ("over_chance", "final - chance"),
    ("at_chance", "tasks at chance"),
    ("final_weighted", "final (q-w)"),
    ("forgetting", "forgetting"),
    ("bwt", "BWT"),
    ("parameters", "params"),
    ("stored_images", "stored imgs"),
    ("image_passes", "train image passes"),
    ("train_flops", "train FLOPs"),
    ("train_seconds", "train s"),
    ("cost_ratio", "image passes vs cumulative static"),
    ("cost_ratio_flops", "FLOPs vs cumulative static"),
]


def run_metrics(run: LoadedRun, reference: LoadedRun | None) -> dict[str, float]:
    out = matrix_metrics.summarise(run.matrix, run.task_increment, weights=run.num_queries)
    last = run.matrix[-1]
    margin = last - run.chance
    out["over_chance"] = float(np.nanmean(margin)) if np.isfinite(margin).any() else math.nan
    out["at_chance"] = float(np.sum(margin[np.isfinite(margin)] <= AT_CHANCE)) if np.isfinite(margin).any() \
        else math.nan
    total = run.cost["total"]
    out["image_passes"] = float(total["image_passes"])
    out["train_seconds"] = float(total["train_seconds"])
    out["train_flops"] = float(total["train_flops"])
    out["parameters"] = float(run.cost.get("model_parameters", math.nan))
    out["stored_images"] = float(total.get("stored_images", 0))
    ratios = cost_ratios(total, reference.cost["total"]) if reference is not None else {}
    out["cost_ratio"] = ratios.get("image_passes", math.nan)
    out["cost_ratio_flops"] = ratios.get("train_flops", math.nan)
    out["cost_ratio_seconds"] = ratios.get("train_seconds", math.nan)
    return out


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if not math.isnan(v)], dtype=np.float64)
    if arr.size == 0:
        return math.nan, math.nan
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


def objective(run: LoadedRun) -> str:
    """The training objective of a run, in words: the metric loss, its parameters and whether
    items sharing the anchor's value count as negatives (``label_aware``)."""
    loss = run.config.get("loss", {})
    options = run.config.get("strategy_options", {})
    if run.info.get("protocol") == "composed":
        return "composed: " + ("uncertainty-regularised" if loss.get("composed") == "uncertainty" else
                               "batch classification") + f" (scale {loss.get('norm_scale')})"
    if loss.get("metric", "infonce") == "multi_similarity":
        text = (f"multi-similarity (alpha {loss.get('ms_alpha')}, beta {loss.get('ms_beta')}, "
                f"lambda {loss.get('ms_base')})")
    else:
        text = f"InfoNCE (tau {loss.get('temperature')})"
    if "label_aware" in options:
        text += ", label-aware" if options["label_aware"] else ", same-value negatives"
    return text


#: Settings that identify a run (or where it lives) rather than define the experiment.
RUN_IDENTITY = ("seed", "run_id", "output_dir", "data_root", "cache_dir", "scenario", "strict", "deterministic")
#: Flattened settings that change how a run is kept or executed, not what it computes.
BOOKKEEPING = ("train.checkpoint_every", "train.compile", "log")


def _flatten(cfg: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in cfg.items():
        if isinstance(value, dict) and value and key != "backbone_kwargs":
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def experiment_settings(run: LoadedRun) -> dict[str, object]:
    """The run's configuration without seed and run identity: runs that share it are seeds of one experiment."""
    flat = _flatten({k: v for k, v in run.config.items() if k not in RUN_IDENTITY})
    arch = flat.get("model.arch", "single")
    unused = tuple(f"model.{name}" for other, names in ARCH_ONLY_MODEL_FIELDS.items() if other != arch
                   for name in names)
    return {k: v for k, v in flat.items()
            if k not in BOOKKEEPING and not any(k == u or k.startswith(u + ".") for u in unused)}


def _key(settings: dict) -> str:
    return json.dumps(settings, sort_keys=True, default=str)


def _base_key(settings: dict) -> str:
    """Settings that a static reference must share (everything but the strategy and its options)."""
    return _key({k: v for k, v in settings.items() if k != "strategy" and not k.startswith("strategy_options")})


def compare(runs: list[LoadedRun]) -> list[dict]:
    """One row per experiment (scenario, strategy and settings; seeds aggregated), sorted by
    scenario and strategy (static last). Variants of one strategy are labelled by the
    settings in which they differ."""
    settings = {r.path: experiment_settings(r) for r in runs}
    refs: dict[tuple, LoadedRun] = {}
    for r in runs:
        if r.strategy == REFERENCE_STRATEGY:
            refs.setdefault((r.scenario, r.seed, _base_key(settings[r.path])), r)
            refs.setdefault((r.scenario, r.seed, None), r)
    groups: dict[tuple[str, str, str], list[LoadedRun]] = defaultdict(list)
    for r in runs:
        groups[(r.scenario, r.strategy, _key(settings[r.path]))].append(r)
    variants: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for (scenario, strategy, _), members in groups.items():
        variants[(scenario, strategy)].append(settings[members[0].path])
    rows = []
    for (scenario, strategy, _), members in groups.items():
        mine = settings[members[0].path]
        others = variants[(scenario, strategy)]
        # fields another variant does not have (another arch's) are not what tells them apart
        differing = sorted(k for k in mine if any(k in o and o[k] != mine[k] for o in others))
        label = strategy + (" [" + ", ".join(f"{k.split('.')[-1]}={mine[k]}" for k in differing) + "]"
                            if differing else "")
        per_run = [run_metrics(r, refs.get((r.scenario, r.seed, _base_key(settings[r.path])))
                               or refs.get((r.scenario, r.seed, None))) for r in members]
        row = {"scenario": scenario, "strategy": strategy, "label": label,
               "metric": METRIC_LABELS.get(members[0].info.get("primary_metric", "map_all"), "?"),
               "objective": objective(members[0]),
               "seeds": sorted(r.seed for r in members), "runs": [str(r.path) for r in members]}
        for key in per_run[0]:
            values = [m[key] for m in per_run]
            row[key], row[key + "_std"] = _mean_std(values)
            row[key + "_ci"] = mean_ci(values)[1]
            row.setdefault("per_seed", {})[key] = {r.seed: m[key] for r, m in zip(members, per_run)}
        row["tasks"] = {name: mean_ci([float(r.matrix[-1, j]) for r in members])
                        for j, name in enumerate(members[0].task_names)}
        row["chance"] = {name: float(np.nanmean([r.chance[j] for r in members]))
                         if np.isfinite([r.chance[j] for r in members]).any() else math.nan
                         for j, name in enumerate(members[0].task_names)}
        row["prioritized"] = _prioritized_summary(members)
        row["doublets"] = members[0].config.get("strategy_options", {}).get("doublets", 0)
        rows.append(row)
    rows.sort(key=lambda r: (r["scenario"], r["strategy"] == budget_curve.REFERENCE,
                             r["strategy"] == REFERENCE_STRATEGY, r.get("train_flops", 0), r["label"]))
    for mine in by_scenario(rows).values():
        compared = [r for r in mine if r["strategy"] != budget_curve.REFERENCE]
        for r in mine:
            r["objective_differs"] = False
        _mark_objectives(compared)
        _paired_tests(compared)
        _place_on_budget_curve(mine)
    return rows


def budget_points(rows: list[dict]) -> list[budget_curve.BudgetPoint]:
    """The joint reference's measured budgets among one scenario's rows (one per budget)."""
    return [budget_curve.BudgetPoint(int(r.get("doublets", 0)), r["per_seed"][TESTED], r["per_seed"]["train_flops"])
            for r in rows if r["strategy"] == budget_curve.REFERENCE]


def _place_on_budget_curve(rows: list[dict]) -> None:
    """``placement`` of every non-joint experiment on the scenario's joint budget curve (None
    without at least two measured budgets); joint rows are marked ``budget_reference``."""
    points = budget_points(rows)
    for r in rows:
        r["budget_reference"] = r["strategy"] == budget_curve.REFERENCE
        r["placement"] = None if r["budget_reference"] or len(points) < 2 else budget_curve.place(
            points, r["per_seed"][TESTED], r["per_seed"]["train_flops"])


def _mark_objectives(rows: list[dict]) -> None:
    """``objective_differs``: the experiment trains with another objective than most of its scenario."""
    counts: dict[str, int] = defaultdict(int)
    for r in rows:
        counts[r["objective"]] += 1
    if not counts:
        return
    common = max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]
    for r in rows:
        r["objective_differs"] = len(counts) > 1 and r["objective"] != common


def _paired_tests(rows: list[dict]) -> None:
    """Paired t-tests over seeds of each experiment's final MAP against finetune, the best
    continual experiment (highest mean) and static; ``vs`` maps "finetune" / "best" / "static"
    to the :class:`~cl_fir.report.statistics.PairedTest` (absent where there is no such row,
    or it is the row itself)."""
    def first(pred):
        return next((r for r in rows if pred(r)), None)

    continual = [r for r in rows if r["strategy"] != REFERENCE_STRATEGY and not math.isnan(r[TESTED])]
    references = {
        "finetune": first(lambda r: r["strategy"] == FINETUNE and not r["objective_differs"]) or
        first(lambda r: r["strategy"] == FINETUNE),
        "best": max(continual, key=lambda r: r[TESTED], default=None),
        "static": first(lambda r: r["strategy"] == REFERENCE_STRATEGY and not r["objective_differs"]) or
        first(lambda r: r["strategy"] == REFERENCE_STRATEGY),
    }
    for r in rows:
        r["vs"] = {name: paired_t_test(r["per_seed"][TESTED], ref["per_seed"][TESTED])
                   for name, ref in references.items() if ref is not None and ref is not r}
        r["is_best"] = r is references["best"]


def _read_matrix(path) -> np.ndarray:
    lines = path.read_text().splitlines()[1:]
    return np.asarray([[float(v) if v else math.nan for v in ln.split(",")[1:]] for ln in lines], dtype=np.float64)


def _prioritized_summary(members: list[LoadedRun]) -> dict[str, dict[str, tuple[float, float]]]:
    """Per prioritised ranking recorded by the runs (``matrix_prio_<labels>_top<k>_map_all.csv``):
    average incremental and final MAP@all, and final pseudo-label accuracy, over seeds."""
    out = {}
    names = sorted({p.name for r in members for p in r.path.glob("matrix_prio_*_map_all.csv")})
    for name in names:
        per_run = []
        for r in members:
            path, acc_path = r.path / name, r.path / "matrix_pl_acc.csv"
            if not path.is_file():
                continue
            m = _read_matrix(path)
            acc = _read_matrix(acc_path) if acc_path.is_file() else None
            per_run.append({"avg_inc": matrix_metrics.average_incremental(m, r.task_increment),
                            "final": matrix_metrics.final_mean(m, r.task_increment),
                            "pl_acc": matrix_metrics.final_mean(acc, r.task_increment) if acc is not None
                            else math.nan})
        ranking = name[len("matrix_"):-len("_map_all.csv")]
        out[ranking] = {k: _mean_std([p[k] for p in per_run]) for k in ("avg_inc", "final", "pl_acc")}
    return out


def prioritized_markdown(rows: list[dict]) -> str:
    """MODC's prioritised retrieval beside plain MAP@all; empty when no run recorded it. A
    ``prio_known_*`` ranking uses each query's true value at test time."""
    body = []
    for r in rows:
        for ranking, m in r.get("prioritized", {}).items():
            uses = "yes" if ranking.startswith("prio_known") else "no"
            body.append([r["scenario"], r["label"], ranking, uses, _cell(r, "final")]
                        + [f"{m[k][0]:.2f}" for k in ("avg_inc", "final", "pl_acc")])
    if not body:
        return ""
    header = ["scenario", "strategy", "ranking", "uses query labels at test time", "plain final",
              "prioritised avg inc.", "prioritised final", "pseudo-label acc."]
    return "Prioritised retrieval (MAP@all %; not comparable with plain rows when query labels are known)\n\n" \
        + markdown_table(header, body)


def _cell(row: dict, key: str) -> str:
    mean = row[key]
    if math.isnan(mean):
        return "n/a"
    if key in ("image_passes", "parameters", "stored_images", "train_flops"):
        return human_count(mean)
    if key.startswith("cost_ratio"):
        return f"{mean:.2f}x"
    if key == "train_seconds":
        return f"{mean:.1f}"
    if key == "at_chance":
        return f"{mean:.1f}".removesuffix(".0") + f" of {len(row['tasks'])}"
    ci = row.get(key + "_ci", math.nan)
    text = f"{mean:.2f}" + (f" ± {ci:.2f}" if len(row["seeds"]) > 1 and not math.isnan(ci) else "")
    return text + (_marks(row) if key == TESTED else "")


def _marks(row: dict) -> str:
    """``*``: differs significantly from the best continual experiment; ``†``: from finetune."""
    vs = row.get("vs", {})
    return ("*" if "best" in vs and vs["best"].significant else "") + \
        ("†" if "finetune" in vs and vs["finetune"].significant else "")


def strategy_label(row: dict) -> str:
    return row["label"] + (" (other objective)" if row.get("objective_differs") else "")


LEGEND = (f"Means ± half-width of the {100 * LEVEL:.0f}% Student-t interval over seeds. On final: * differs "
          f"significantly from the best continual strategy, † from finetune (paired two-sided t-test over "
          f"seeds, p < {1 - LEVEL:.2f}); no mark: no significant difference. final - chance: mean over tasks "
          f"of the final value minus the task's chance level (uniformly random ranking); tasks at chance: "
          f"final within {AT_CHANCE:g} points of chance (not a result). vs cumulative static: the ratio to static "
          f"retraining at every increment, about 2/(n+1) for one pass over n increments by construction (a "
          f"formula, not a measurement); cost against joint training at equal quality is in the budget-curve "
          f"table when joint runs are present (cl-fir budget).")


def compared_rows(rows: list[dict]) -> list[dict]:
    """The experiments of the main tables: every row but the joint budget curve's."""
    return [r for r in rows if not r.get("budget_reference")]


def comparison_markdown(rows: list[dict]) -> str:
    header = ["scenario", "strategy", "objective", "seeds", "metric"] + [label for _, label in COLUMNS]
    body = [[r["scenario"], strategy_label(r), r["objective"], ",".join(map(str, r["seeds"])), r["metric"]]
            + [_cell(r, k) for k, _ in COLUMNS]
            for r in compared_rows(rows)]
    return markdown_table(header, body) + "\n\n" + LEGEND


def _flops(x: float | None) -> str:
    return "n/a" if x is None or math.isnan(x) else f"{x:.3g}"


def budget_tables(rows: list[dict]) -> tuple[tuple[list[str], list[list[str]]], tuple[list[str], list[list[str]]]]:
    """One scenario's joint budget curve (per budget: seeds, FLOPs, final) and every other
    experiment's placement on it."""
    curve = sorted((r for r in rows if r.get("budget_reference")), key=lambda r: r["train_flops"])
    curve_body = [[f"{int(r['doublets'])}" if r["doublets"] else "as static", ",".join(map(str, r["seeds"])),
                   _flops(r["train_flops"]), _cell(r, TESTED)] for r in curve]
    placed = []
    for r in compared_rows(rows):
        p = r.get("placement")
        if p is None:
            continue
        if p.joint_at_flops is None:
            at, diff = f"outside the curve (seeds {', '.join(map(str, p.seeds_outside))})", ""
        else:
            at = f"{p.joint_at_flops[0]:.2f}" + (f" ± {p.joint_at_flops[1]:.2f}" if not math.isnan(p.joint_at_flops[1])
                                                   else "")
            diff = _difference(p.difference)
        reach = _flops(p.flops_to_reach) if p.reach == "on the curve" else (
            f"{p.reach} (<= {_flops(p.flops_to_reach)})" if p.reach == "below the curve" else p.reach)
        placed.append([strategy_label(r), ",".join(map(str, r["seeds"])), _flops(p.flops), _cell(r, TESTED), at, diff,
                       reach, f"{p.ratio_joint_plateau:.2f}x", _cell(r, "cost_ratio_flops")])
    return ((["joint budget (doublets)", "seeds", "train FLOPs", "final"], curve_body),
            (["strategy", "seeds", "train FLOPs", "final", "joint at equal FLOPs", "final - joint (paired)",
              "FLOPs joint needs for it", "FLOPs vs joint at plateau", "FLOPs vs cumulative static (by construction)"],
             placed))


def budget_markdown(rows: list[dict]) -> str:
    """Per scenario with a joint budget curve: the curve, and each experiment placed on it."""
    parts = []
    for scenario, mine in by_scenario(rows).items():
        if len(budget_points(mine)) < 2:
            continue
        (ch, cb), (ph, pb) = budget_tables(mine)
        parts.append(f"{scenario}: joint training's budget curve (final {mine[0]['metric']}, mean ± 95% interval "
                     f"over seeds)\n\n" + markdown_table(ch, cb))
        parts.append(f"{scenario}: every experiment at its training FLOPs against joint training at the same FLOPs "
                     f"(interpolated in log FLOPs between measured budgets, never extrapolated; plateau: within "
                     f"{budget_curve.PLATEAU_POINTS:g} point of the curve's best)\n\n" + markdown_table(ph, pb))
    return "\n\n".join(parts)


def _difference(test) -> str:
    if test is None:
        return ""
    if math.isnan(test.p_value):
        return f"{test.difference:+.2f} (no test: {test.pairs} paired seed{'s' * (test.pairs != 1)})"
    verdict = f"p = {test.p_value:.3f}" if test.significant else f"n.s., p = {test.p_value:.2f}"
    return (f"{test.difference:+.2f} [{test.difference - test.half_width:+.2f}, "
            f"{test.difference + test.half_width:+.2f}], {verdict}")


def significance_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Per experiment: its final MAP minus finetune's, the best continual strategy's and
    static's, with the 95% interval of the paired difference and the p-value."""
    header = ["strategy", "seeds", "vs finetune", "vs best continual", "vs static"]
    body = [[strategy_label(r) + (" (best)" if r.get("is_best") else ""), ",".join(map(str, r["seeds"]))]
            + [_difference(r.get("vs", {}).get(k)) for k in ("finetune", "best", "static")] for r in rows]
    return header, body


def significance_markdown(rows: list[dict]) -> str:
    parts = []
    for scenario, mine in by_scenario(compared_rows(rows)).items():
        if max(len(r["seeds"]) for r in mine) < 2:
            continue
        parts.append(f"{scenario}: paired differences of final {mine[0]['metric']} (points; {100 * LEVEL:.0f}% "
                     f"interval; paired t-test over common seeds; n.s. = no significant difference)\n\n"
                     + markdown_table(*significance_table(mine)))
    return "\n\n".join(parts)


def comparison_csv(rows: list[dict]) -> str:
    keys = [k for k, _ in COLUMNS] + ["cost_ratio_seconds"]
    tests = ("finetune", "best", "static")
    lines = ["scenario,strategy,objective,seeds,metric," + ",".join(f"{k},{k}_std,{k}_ci95" for k in keys)
             + "," + ",".join(f"final_vs_{t},final_vs_{t}_ci95,final_vs_{t}_p" for t in tests)]
    for r in rows:
        vals = ",".join(f"{r[k]:.6g},{r[k + '_std']:.6g},{r[k + '_ci']:.6g}" for k in keys)
        vs = r.get("vs", {})
        pairs = ",".join(f"{vs[t].difference:.6g},{vs[t].half_width:.6g},{vs[t].p_value:.6g}" if t in vs else ",,"
                         for t in tests)
        lines.append(f"{r['scenario']},\"{r['label']}\",\"{r['objective']}\",{' '.join(map(str, r['seeds']))},"
                     f"{r['metric']},{vals},{pairs}")
    return "\n".join(lines) + "\n"


def by_scenario(rows: list[dict]) -> dict[str, list[dict]]:
    """Experiment rows grouped by scenario, in row order."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["scenario"], []).append(r)
    return groups


def task_table(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    """Header and body of the final-metric-per-task table of one scenario's experiments; the
    last row is each task's chance level, and a value within ``AT_CHANCE`` of it is marked ``~``."""
    tasks = list(rows[0]["tasks"])
    body = [[strategy_label(r)] + [_pm(*r["tasks"][t], len(r["seeds"]) > 1)
                                   + ("~" if r["tasks"][t][0] - r["chance"][t] <= AT_CHANCE else "")
                                   for t in tasks] for r in rows]
    body.append(["chance"] + [f"{rows[0]['chance'][t]:.2f}" if not math.isnan(rows[0]["chance"][t]) else "n/a"
                              for t in tasks])
    return ["strategy"] + tasks, body


def task_table_markdown(rows: list[dict]) -> str:
    """Final metric per task, one table per scenario (rows: experiments; columns: tasks)."""
    return "\n\n".join(f"{scenario}: final {mine[0]['metric']} per task (%; ~ = within {AT_CHANCE:g} points of "
                       f"chance)\n\n" + markdown_table(*task_table(mine))
                       for scenario, mine in by_scenario(compared_rows(rows)).items())


def _pm(mean: float, std: float, with_std: bool) -> str:
    if math.isnan(mean):
        return "n/a"
    return f"{mean:.2f}" + (f" ± {std:.2f}" if with_std else "")


def task_table_csv(rows: list[dict]) -> str:
    lines = ["scenario,strategy,metric,task,final,final_ci95,chance"]
    for r in rows:
        for task, (mean, ci) in r["tasks"].items():
            lines.append(f"{r['scenario']},\"{r['label']}\",{r['metric']},\"{task}\",{mean:.6g},{ci:.6g},"
                         f"{r['chance'][task]:.6g}")
    return "\n".join(lines) + "\n"


_LATEX_SPECIAL = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                  "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return "".join(_LATEX_SPECIAL.get(ch, ch) for ch in str(text))


def _latex_cell(row: dict, key: str) -> str:
    return latex_escape(_cell(row, key)).replace("±", r"$\pm$")


def comparison_latex(rows: list[dict]) -> str:
    """A booktabs table per scenario (main columns and cost), ready for \\input in a paper."""
    keys = ["avg_incremental", "final", "final_weighted", "forgetting", "bwt", "cost_ratio", "cost_ratio_flops"]
    heads = ["Avg.\\ inc.", "Final", "Final (q-w)", "Forgetting", "BWT", "Cost", "FLOPs"]
    out = []
    for scenario, mine in by_scenario(compared_rows(rows)).items():
        out += [r"\begin{table}[t]", r"\centering",
                rf"\caption{{{latex_escape(scenario)}: {latex_escape(mine[0]['metric'])} (\%), mean $\pm$ std over "
                rf"seeds; cost relative to static retraining.}}",
                r"\begin{tabular}{l" + "r" * len(keys) + "}", r"\toprule",
                "Strategy & " + " & ".join(heads) + r" \\", r"\midrule"]
        for r in mine:
            out.append(latex_escape(r["label"]) + " & " + " & ".join(_latex_cell(r, k) for k in keys) + r" \\")
        out += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(out)
