"""Strategy registry: ``@register_strategy("name")`` on a class, found in three places.

1. Every module of the ``cl_fir.strategies`` package (the top-level ``strategies/``
   folder) is imported on first lookup, so dropping a file there adds a strategy.
2. Installed packages can declare an entry point in the group ``cl_fir.strategies``
   (``my_pkg.strategies:MyStrategy`` or a module that registers on import).
3. ``--strategy path/to/file.py:ClassName`` loads a user's file without touching cl-fir.
   The class is registered under its ``@register_strategy`` name, or under the class
   name in lower case; the run's ``config.json`` keeps the path (``strategy_source``) so
   the run can be resumed.

A strategy's options are the fields of its ``Options`` dataclass. Their help text is the
field's ``metadata["help"]`` or, more simply, the comment at the end of its line;
:func:`describe_options` returns both with types and defaults (``cl-fir list strategies -v``).
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.metadata
import importlib.util
import inspect
import io
import pkgutil
import sys
import tokenize
from pathlib import Path

from cl_fir.errors import ConfigError
from cl_fir.strategy import Strategy

ENTRY_POINT_GROUP = "cl_fir.strategies"
_REGISTRY: dict[str, type[Strategy]] = {}
_discovered = False


def register_strategy(name: str, families: tuple[str, ...] | None = None):
    """Register a :class:`Strategy` subclass under ``name`` (and, optionally, the task families it supports)."""
    def decorate(cls: type[Strategy]) -> type[Strategy]:
        if not (isinstance(cls, type) and issubclass(cls, Strategy)):
            raise TypeError(f"@register_strategy({name!r}) must decorate a Strategy subclass")
        existing = _REGISTRY.get(name)
        if existing is not None and existing.__qualname__ != cls.__qualname__:
            raise ValueError(f"strategy name {name!r} is already registered by {existing.__module__}")
        cls.name = name
        if families is not None:
            cls.families = tuple(families)
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
    for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        try:
            loaded = ep.load()
        except Exception as exc:
            raise ConfigError(f"entry point {ep.name!r} ({ep.value}) in group {ENTRY_POINT_GROUP} failed to load: "
                              f"{type(exc).__name__}: {exc}") from None
        if isinstance(loaded, type) and issubclass(loaded, Strategy) and loaded not in _REGISTRY.values():
            register_strategy(loaded.name or ep.name)(loaded)
    _discovered = True


def available_strategies() -> dict[str, type[Strategy]]:
    discover()
    return dict(sorted(_REGISTRY.items()))


def is_file_spec(spec: str) -> bool:
    return ":" in spec and spec.rsplit(":", 1)[0].endswith(".py")


def load_strategy_file(spec: str) -> type[Strategy]:
    """``path/to/file.py:ClassName`` -> the class, registered (see the module docstring)."""
    path_text, _, class_name = spec.rpartition(":")
    path = Path(path_text)
    if not path.is_file():
        raise ConfigError(f"--strategy {spec}: {path} does not exist")
    module_name = f"cl_fir_user_strategy_{abs(hash(str(path.resolve())))}"
    module = sys.modules.get(module_name)
    if module is None:
        module_spec = importlib.util.spec_from_file_location(module_name, path)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[module_name] = module
        try:
            module_spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[module_name]
            raise ConfigError(f"--strategy {spec}: importing {path} failed: {type(exc).__name__}: {exc}") from None
    cls = getattr(module, class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Strategy)):
        found = [n for n, v in vars(module).items() if isinstance(v, type) and issubclass(v, Strategy)
                 and v.__module__ == module_name]
        raise ConfigError(f"--strategy {spec}: {path} has no Strategy subclass {class_name!r} "
                          f"(it defines: {', '.join(found) or 'none'})")
    if cls not in _REGISTRY.values():
        register_strategy(cls.name if cls.name and cls.name not in _REGISTRY else class_name.lower())(cls)
    return cls


def get_strategy_class(name: str) -> type[Strategy]:
    """A registered strategy by name, or a user's class by ``path/to/file.py:ClassName``."""
    if is_file_spec(name):
        return load_strategy_file(name)
    strategies = available_strategies()
    if name not in strategies:
        raise ConfigError(f"unknown strategy {name!r}; available: {', '.join(strategies) or 'none'} "
                          f"(or path/to/file.py:ClassName)")
    return strategies[name]


def _line_comments(cls: type) -> dict[str, str]:
    """Trailing comments of ``name: type = value  # comment`` lines in a class body."""
    try:
        source = inspect.getsource(cls)
    except (OSError, TypeError):
        return {}
    out: dict[str, str] = {}
    line_field: dict[int, str] = {}
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (tokenize.TokenError, IndentationError):
        return {}
    for i, tok in enumerate(tokens):
        if tok.type == tokenize.NAME and i + 1 < len(tokens) and tokens[i + 1].string == ":" \
                and tok.start[0] not in line_field:
            line_field[tok.start[0]] = tok.string
        elif tok.type == tokenize.COMMENT and tok.start[0] in line_field:
            out[line_field[tok.start[0]]] = tok.string.lstrip("#").strip()
    return out


def describe_options(cls: type[Strategy]) -> list[dict]:
    """Name, type, default and help of every option (inherited ones too)."""
    comments: dict[str, str] = {}
    for klass in reversed(cls.Options.__mro__):
        if dataclasses.is_dataclass(klass):
            comments.update(_line_comments(klass))
    out = []
    for f in dataclasses.fields(cls.Options):
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        type_name = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
        out.append({"name": f.name, "type": type_name, "default": default,
                    "help": f.metadata.get("help") or comments.get(f.name, "")})
    return out
