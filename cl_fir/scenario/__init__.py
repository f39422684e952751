"""Scenarios: a dataset, a task family and an ordered split of its tasks into increments.

``spec`` reads the TOML file (see its docstring for the sections); ``tasks`` holds what every
family builds (increments, evaluation tasks); ``attribute`` and ``composed`` build the
scenario of each family. :func:`build_scenario` picks the family's builder.
"""

from __future__ import annotations

from cl_fir.config import RunConfig
from cl_fir.scenario.attribute import Scenario
from cl_fir.scenario.composed import ComposedScenario, ComposedTask
from cl_fir.scenario.spec import FAMILIES, ScenarioSpec, apply_spec_defaults, available_scenarios, load_spec
from cl_fir.scenario.tasks import EvalTask, Increment, IncrementViews, RankingTask, TripletTask

#: ``family`` of a scenario file -> the class that builds it
BUILDERS = {"attribute": Scenario, "composed": ComposedScenario}
assert set(BUILDERS) == set(FAMILIES)


def build_scenario(spec: ScenarioSpec, cfg: RunConfig, progress_factory=None, strict: bool = False):
    """The built scenario of the spec's family."""
    return BUILDERS[spec.family](spec, cfg, progress_factory, strict)


__all__ = ["BUILDERS", "ComposedScenario", "ComposedTask", "EvalTask", "FAMILIES", "Increment", "IncrementViews",
           "RankingTask", "Scenario", "ScenarioSpec", "TripletTask", "apply_spec_defaults", "available_scenarios",
           "build_scenario", "load_spec"]
