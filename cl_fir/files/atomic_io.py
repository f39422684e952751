"""Atomic file writes: write to a temporary file in the same folder, then rename.

A reader never sees a half-written result file, whatever happens to the writer. A write
that fails (a full disk, a read-only or vanished folder) raises
:class:`~cl_fir.errors.OutputError` naming the file and the reason, and leaves the
previous version of the file, if any, untouched and no temporary file behind.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

from cl_fir.errors import OutputError

#: What the user can do about a failed write, by errno.
_HINTS = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up",
          errno.EROFS: "the folder is read-only", errno.EACCES: "the folder is not writable",
          errno.EPERM: "the folder is not writable"}


def output_error(target: str | os.PathLike, exc: OSError) -> OutputError:
    """One line for a failed write of ``target``."""
    reason = exc.strerror or str(exc) or type(exc).__name__
    hint = _HINTS.get(exc.errno)
    err = OutputError(f"cannot write {target}: {reason}" + (f" ({hint})" if hint else ""))
    err.errno = exc.errno
    return err


def _write(fh, data, target: Path) -> int:
    """The one call through which file contents are written (tests inject disk faults here)."""
    return fh.write(data)


class _GuardedFile:
    """A binary file whose first failed write is remembered: writers such as ``torch.save``
    turn an OSError from ``write`` into an unrelated error, the remembered one is reported."""

    def __init__(self, raw, target: Path):
        self.raw = raw
        self.target = target
        self.error: OSError | None = None

    def write(self, data) -> int:
        try:
            return _write(self.raw, data, self.target)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.raw.flush()


@contextmanager
def _temporary_beside(target: Path) -> Iterator[tuple[int, Path]]:
    """An open descriptor and the path of a new temporary file next to ``target``, readable like
    any file; the body renames it into place. A failed write (OSError) becomes one
    :class:`OutputError` naming ``target``; the temporary never outlives the block."""
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        tmp = Path(tmp_name)
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600; results should be readable like any file
        yield fd, tmp
    except OutputError:
        raise
    except OSError as exc:
        raise output_error(target, exc) from None
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


@contextmanager
def atomic_file(path: str | os.PathLike, verify: Callable[[Path], None] | None = None) -> Iterator[_GuardedFile]:
    """Yield a binary file writing a temporary next to ``path``; on success it is flushed to
    disk, checked by ``verify(temporary_path)`` if given, and renamed onto ``path``."""
    target = Path(path)
    with _temporary_beside(target) as (fd, tmp):
        with os.fdopen(fd, "wb") as raw:
            fh = _GuardedFile(raw, target)
            try:
                yield fh
            except BaseException:
                if fh.error is not None:
                    raise fh.error from None
                raise
            raw.flush()
            os.fsync(raw.fileno())
        if verify is not None:
            verify(tmp)
        os.replace(tmp, target)


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path`` for a writer that opens files itself; rename it
    onto ``path`` on success."""
    target = Path(path)
    with _temporary_beside(target) as (fd, tmp):
        os.close(fd)
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, target)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path) as fh:
        fh.write(data)


def write_text(path: str | os.PathLike, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    # numpy scalars and paths show up in configs and metrics
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__} to JSON")
