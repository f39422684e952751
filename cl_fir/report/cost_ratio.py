"""Cost ratio of a run against the ``static`` run of the same scenario and seed.

The ratio is taken in three units: image passes (hardware-independent), estimated FLOPs
(counts teacher forwards and extra head passes at their real weight) and training
seconds (this machine only).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

REFERENCE_STRATEGY = "static"
UNITS = {"image_passes": "image passes", "train_flops": "FLOPs", "train_seconds": "train time"}


def cost_ratios(totals: dict, reference_totals: dict) -> dict[str, float]:
    return {unit: (totals[unit] / reference_totals[unit]) if reference_totals.get(unit) else math.nan
            for unit in UNITS}


@dataclass
class ReferenceRun:
    path: Path
    totals: dict

    def ratios(self, totals: dict) -> dict:
        return {**cost_ratios(totals, self.totals), "reference": str(self.path)}


def find_reference_run(output_dir: Path, scenario: str, seed: int, strategy: str) -> ReferenceRun | None:
    """The complete static run of this scenario and seed under ``output_dir``, if any."""
    if strategy == REFERENCE_STRATEGY:
        return None
    for info_path in sorted((output_dir / scenario / REFERENCE_STRATEGY).glob("*/run.json")):
        try:
            info = json.loads(info_path.read_text())
            if info.get("status") == "complete" and int(info.get("seed", -1)) == seed:
                cost = json.loads((info_path.parent / "cost.json").read_text())
                return ReferenceRun(info_path.parent, cost["total"])
        except (OSError, ValueError, KeyError, TypeError, AttributeError):   # a damaged run is no reference
            continue
    return None


def ratio_line(cfg, scenario: str, ratios: dict | None) -> str:
    if cfg.strategy == REFERENCE_STRATEGY:
        return "this is the static reference run (cost ratio 1.00x by definition)"
    if not ratios:
        return (f"no complete static run for {scenario} seed {cfg.seed} under {cfg.output_dir}; for the cost ratio, "
                f"run: cl-fir run --strategy static --scenario {cfg.scenario} --seed {cfg.seed} "
                f"--output-dir {cfg.output_dir}")
    parts = ", ".join(f"{ratios[u]:.2f}x {label}" for u, label in UNITS.items())
    return f"training cost vs static (seed {cfg.seed}): {parts}"
