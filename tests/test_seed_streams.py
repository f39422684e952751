"""Random streams: each is named once (cl_fir.engine.seeding.Stream), and the code that draws
from one is one of its declared users, so no two parts of a run draw the same numbers."""

from __future__ import annotations

import ast
from pathlib import Path

from cl_fir.engine.seeding import STREAM_USERS, Stream

ROOT = Path(__file__).resolve().parents[1]


def _stream_call_sites() -> list[tuple[str, int, ast.expr]]:
    """(file, line, stream argument) of every ``epoch_seed(epoch, stream, ...)`` call."""
    sites = []
    for folder in ("cl_fir", "strategies"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "epoch_seed":
                    stream = node.args[1] if len(node.args) > 1 else next(
                        (k.value for k in node.keywords if k.arg == "stream"), None)
                    sites.append((path.relative_to(ROOT).as_posix(), node.lineno, stream))
    return sites


def test_every_stream_has_its_own_number_and_declared_users():
    assert len({int(s) for s in Stream}) == len(Stream)
    assert set(STREAM_USERS) == set(Stream)
    assert all(users for users in STREAM_USERS.values())


def test_every_draw_names_a_stream_and_comes_from_one_of_its_users():
    sites = _stream_call_sites()
    assert len(sites) >= len(Stream)
    used: dict[Stream, set[str]] = {}
    for file, line, arg in sites:
        assert (isinstance(arg, ast.Attribute) and isinstance(arg.value, ast.Name) and arg.value.id == "Stream"), \
            f"{file}:{line}: the stream must be a member of cl_fir.engine.seeding.Stream, not {ast.unparse(arg)}"
        stream = Stream[arg.attr]
        assert file in STREAM_USERS[stream], f"{file}:{line} draws from {stream.name}, declared for " \
                                             f"{', '.join(STREAM_USERS[stream])} only"
        used.setdefault(stream, set()).add(file)
    assert {s: set(u) for s, u in STREAM_USERS.items()} == used      # every declared user really draws


def test_users_that_can_run_in_the_same_epoch_never_share_a_stream():
    # the pairs that collided before: replay's buffer and D&C's batch schedule (both at epoch 0
    # of an increment), modc's view pairs and D&C's k-means
    def streams_of(file):
        return {s for s, users in STREAM_USERS.items() if file in users}

    division = streams_of("cl_fir/engine/data_division.py")
    for strategy in ("strategies/replay.py", "strategies/modc/__init__.py", "strategies/ewc.py", "cl_fir/engine/loop.py"):
        assert not division & streams_of(strategy), strategy
    shared = [s for s, users in STREAM_USERS.items() if len(users) > 1]
    assert shared == [Stream.DOUBLETS]          # a strategy's own sampler replaces the default one
