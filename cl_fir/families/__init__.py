"""Task families: what differs between attribute-specific and composed retrieval (model,
sampler, batch layout, forward pass, metric loss, distillation pairs), one class each."""

from __future__ import annotations

from cl_fir.errors import ConfigError
from cl_fir.families.attribute import AttributeFamily
from cl_fir.families.base import Batch, PassCounter, TaskFamily
from cl_fir.families.composed import ComposedFamily

#: a scenario's ``family`` -> its class
FAMILIES: dict[str, type[TaskFamily]] = {f.name: f for f in (AttributeFamily, ComposedFamily)}


def family_named(name: str) -> type[TaskFamily]:
    if name not in FAMILIES:
        raise ConfigError(f"unknown task family {name!r}; expected one of {', '.join(FAMILIES)}")
    return FAMILIES[name]


def family_of(scenario) -> type[TaskFamily]:
    """The family class of a built scenario (or of a scenario spec)."""
    spec = getattr(scenario, "spec", scenario)
    return family_named(spec.family)


__all__ = ["AttributeFamily", "Batch", "ComposedFamily", "FAMILIES", "PassCounter", "TaskFamily", "family_named",
           "family_of"]
