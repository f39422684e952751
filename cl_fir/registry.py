"""Strategy registry: ``@register_strategy("name")`` on a class in ``strategies/``.

Every module of the ``cl_fir.strategies`` package (the top-level ``strategies/`` folder)
is imported on first lookup, so dropping a file there is enough to add a strategy.
"""

from __future__ import annotations

import importlib
import pkgutil

from cl_fir.errors import ConfigError
from cl_fir.strategy import Strategy

_REGISTRY: dict[str, type[Strategy]] = {}
_discovered = False


def register_strategy(name: str):
    def decorate(cls: type[Strategy]) -> type[Strategy]:
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise TypeError(f"@register_strategy({name!r}) must decorate a Strategy subclass")
        existing = _REGISTRY.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"strategy name {name!r} is already registered by {existing.__module__}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorate


def discover() -> None:
    global _discovered
    if _discovered:
        return
    import cl_fir.strategies as package

    for info in sorted(pkgutil.iter_modules(package.__path__), key=lambda m: m.name):
        if not info.name.startswith("_"):
            importlib.import_module(f"{package.__name__}.{info.name}")
    _discovered = True


def available_strategies() -> dict[str, type[Strategy]]:
    discover()
    return dict(sorted(_REGISTRY.items()))


def get_strategy_class(name: str) -> type[Strategy]:
    strategies = available_strategies()
    if name not in strategies:
        raise ConfigError(f"unknown strategy {name!r}; available: {', '.join(strategies) or 'none'}")
    return strategies[name]
