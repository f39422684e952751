"""Cost as a measurement: joint training's budget curve, and where each strategy sits on it.

A continual strategy's claim "as good as retraining at a fraction of its cost" needs a
reference whose quality depends on its budget. ``joint`` (one model trained from the
initial weights on all tasks, at a given number of doublets) run at several budgets gives
the **budget curve**: its final metric against its training FLOPs, per seed. A strategy
that spent F FLOPs and reached a final metric M is then placed on it:

* **joint at equal FLOPs**: the curve's value at F, interpolated linearly in log FLOPs
  between the two measured budgets around F, per seed, and never extrapolated: outside the
  measured budgets the answer is "outside the curve";
* **the difference** M - joint(F), per seed, with its paired t-test over the seeds both have
  (:mod:`cl_fir.report.statistics`);
* **FLOPs joint needs to reach M**: where the mean curve first reaches M (interpolated the
  same way); "above the curve" when joint never reaches it within the measured budgets,
  "below the curve" when joint's smallest budget already does better;
* **cost ratios**: F against cumulative ``static`` (by construction about 2/(n+1) of it for
  one pass over n increments: a formula, not a finding) and against **joint at its
  plateau**, the smallest measured budget whose mean is within ``PLATEAU_POINTS`` of the
  curve's best mean.

Everything here is a pure function of the runs' final metrics and FLOPs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from cl_fir.report.statistics import PairedTest, mean_ci, paired_t_test

#: A budget is "at the plateau" when its mean is within this many points of the curve's best mean.
PLATEAU_POINTS = 1.0
REFERENCE = "joint"


@dataclass
class BudgetPoint:
    """One measured budget of the joint reference: per seed, its final metric and training FLOPs."""

    doublets: int
    values: dict[int, float]
    flops: dict[int, float]

    @property
    def mean_flops(self) -> float:
        return float(np.mean(list(self.flops.values())))

    @property
    def mean_value(self) -> float:
        return float(np.mean(list(self.values.values())))


@dataclass
class Placement:
    """Where one experiment sits on the budget curve (see the module docstring)."""

    flops: float                                   # the strategy's mean training FLOPs
    joint_at_flops: tuple[float, float] | None     # (mean, 95% half-width) over seeds; None: outside the curve
    difference: PairedTest | None                  # strategy - joint at its FLOPs, paired over seeds
    flops_to_reach: float | None                   # FLOPs joint needs for the strategy's mean final metric
    reach: str                                     # "on the curve" | "above the curve" | "below the curve"
    ratio_joint_plateau: float
    seeds_outside: list[int] = field(default_factory=list)


def interpolate(xs: list[float], ys: list[float], x: float) -> float | None:
    """``ys`` at ``x``, linear in log10(x) between the measured points (``xs`` increasing);
    None outside ``[xs[0], xs[-1]]``: a curve is never extrapolated."""
    if not xs or x < xs[0] or x > xs[-1] or x <= 0:
        return None
    lx, lxs = math.log10(x), [math.log10(v) for v in xs]
    for k in range(len(xs) - 1):
        if lxs[k] <= lx <= lxs[k + 1]:
            if lxs[k + 1] == lxs[k]:
                return float(ys[k])
            t = (lx - lxs[k]) / (lxs[k + 1] - lxs[k])
            return float(ys[k] + t * (ys[k + 1] - ys[k]))
    return float(ys[-1])


def flops_to_reach(xs: list[float], ys: list[float], target: float) -> tuple[float | None, str]:
    """The smallest x where the curve (linear in log10 x between points) reaches ``target``:
    ``(x, "on the curve")``, ``(None, "above the curve")`` when it never does, or
    ``(xs[0], "below the curve")`` when the first point already is at or above it."""
    if not xs:
        return None, "above the curve"
    if ys[0] >= target:
        return xs[0], "below the curve"
    for k in range(len(xs) - 1):
        if ys[k] < target <= ys[k + 1]:
            t = (target - ys[k]) / (ys[k + 1] - ys[k])
            lx = math.log10(xs[k]) + t * (math.log10(xs[k + 1]) - math.log10(xs[k]))
            return float(10 ** lx), "on the curve"
    return None, "above the curve"


def plateau_flops(points: list[BudgetPoint]) -> float:
    """FLOPs of the smallest budget whose mean is within ``PLATEAU_POINTS`` of the best mean."""
    best = max(p.mean_value for p in points)
    return next(p.mean_flops for p in sorted(points, key=lambda p: p.mean_flops)
                if p.mean_value >= best - PLATEAU_POINTS)


def place(points: list[BudgetPoint], values: dict[int, float], flops: dict[int, float]) -> Placement:
    """Place an experiment (per-seed final metric and training FLOPs) on the budget curve."""
    points = sorted(points, key=lambda p: p.mean_flops)
    joint, outside = {}, []
    for seed in sorted(set(values) & set(flops)):
        curve = [p for p in points if seed in p.values]
        if len(curve) < 2:
            outside.append(seed)
            continue
        curve.sort(key=lambda p: p.flops[seed])
        at = interpolate([p.flops[seed] for p in curve], [p.values[seed] for p in curve], flops[seed])
        if at is None:
            outside.append(seed)
        else:
            joint[seed] = at
    mean_flops = float(np.mean(list(flops.values())))
    reach_at, reach = flops_to_reach([p.mean_flops for p in points], [p.mean_value for p in points],
                                     float(np.mean(list(values.values()))))
    return Placement(
        flops=mean_flops,
        joint_at_flops=mean_ci(list(joint.values())) if joint and not outside else None,
        difference=paired_t_test(values, joint) if joint and not outside else None,
        flops_to_reach=reach_at, reach=reach,
        ratio_joint_plateau=mean_flops / plateau_flops(points),
        seeds_outside=outside,
    )
