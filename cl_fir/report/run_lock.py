"""One cl-fir process per run folder.

Two processes writing one run folder (a sweep retried by hand while the first still runs)
would interleave their checkpoints and results. :meth:`RunLock.acquire` creates
``<run folder>/.cl-fir.lock`` holding the owner's process id, host name and process start
time; a second process refuses in one line while the owner runs. The run releases it on
every exit it sees (finished, failed, Ctrl-C, SIGTERM). SIGKILL or a power cut leave the
file behind: a lock whose process no longer runs on this host (or whose process id now
belongs to another process, told apart by its start time) is stale, and the next run takes
it over and says so. A lock taken on another host cannot be checked from here; the message
names the file to delete once that run is known to be gone.
"""

from __future__ import annotations

import json
import os
import socket
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cl_fir.files.atomic_io import output_error
from cl_fir.errors import ConfigError

LOCK_NAME = ".cl-fir.lock"
_held: set[Path] = set()   # lock files this process holds (a lock naming this process but not here is stale)


@dataclass
class RunLock:
    path: Path
    #: the previous owner's record when a stale lock was taken over, else None
    took_over: dict | None = None
    stale_reason: str = ""

    @classmethod
    def acquire(cls, folder: str | Path) -> "RunLock":
        """Take the lock of ``folder`` (which must exist) or raise ConfigError naming its owner."""
        path = Path(folder) / LOCK_NAME
        record = {"pid": os.getpid(), "host": socket.gethostname(), "process_start": _start_time(os.getpid()),
                  "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        taken_from, reason = None, ""
        for _ in range(5):
            if _create(path, json.dumps(record).encode()):
                _held.add(path.resolve())
                return cls(path, taken_from, reason)
            raw = _read(path)
            if raw is None:          # released between our two calls: try again
                continue
            owner = _parse(raw)
            reason = _stale(owner, path)
            if reason is None:
                host = owner.get("host", "?")
                where = "" if host == socket.gethostname() else (
                    f"; it was taken on host {host}, which cannot be checked from here: delete {path} once that "
                    f"run is known to be gone")
                raise ConfigError(f"{folder} is in use by another cl-fir run (pid {owner.get('pid')} on {host}, "
                                  f"since {owner.get('since', '?')}); wait for it to end or stop it{where}")
            if _remove_if_unchanged(path, raw):
                taken_from = owner
        raise ConfigError(f"{folder}: could not take the run lock {path}: other processes keep taking it")

    def describe_takeover(self) -> str:
        """One line for a stale lock taken over (empty when there was none)."""
        if self.took_over is None:
            return ""
        return f"took over the stale lock of {self.path.parent} ({self.stale_reason})"

    def release(self) -> None:
        """Delete the lock file if this process still holds it (never raises)."""
        key = self.path.resolve()
        if key not in _held:
            return
        _held.discard(key)
        raw = _read(self.path)
        if raw is not None and _parse(raw).get("pid") == os.getpid():
            try:
                self.path.unlink()
            except OSError:
                pass   # a read-only folder: the next run finds the lock stale


def _create(path: Path, content: bytes) -> bool:
    """Create ``path`` holding ``content`` unless it exists; the file appears complete or not at all."""
    tmp = None
    try:
        fd, name = tempfile.mkstemp(prefix=f"{LOCK_NAME}.", suffix=".tmp", dir=path.parent)
        tmp = Path(name)
        with os.fdopen(fd, "wb") as fh:
            fh.write(content)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        except OSError:   # a file system without hard links: exclusive create instead
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                return False
            with os.fdopen(fd, "wb") as fh:
                fh.write(content)
            return True
    except OSError as exc:
        raise output_error(path, exc) from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the run lock ({exc.strerror or exc})") from None


def _parse(raw: bytes) -> dict:
    try:
        owner = json.loads(raw.decode("utf-8"))
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


def _stale(owner: dict, path: Path) -> str | None:
    """Why the lock is stale, or None while its owner runs (or cannot be checked)."""
    pid = owner.get("pid")
    if not isinstance(pid, int):
        return "the lock file was damaged"
    if owner.get("host") != socket.gethostname():
        return None
    if pid == os.getpid():
        return None if path.resolve() in _held else f"pid {pid}, this process, no longer holds it"
    started = _start_time(pid)
    if not _alive(pid):
        return f"pid {pid} is no longer running"
    if owner.get("process_start") and started and owner["process_start"] != started:
        return f"pid {pid} now belongs to another process"
    return None


def _remove_if_unchanged(path: Path, raw: bytes) -> bool:
    """Delete the stale lock unless another process replaced it meanwhile."""
    aside = path.with_name(f"{LOCK_NAME}.stale-{os.getpid()}")
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise output_error(path, exc) from None
    try:
        if aside.read_bytes() == raw:
            return True
        try:                         # someone else's fresh lock: put it back
            os.link(aside, path)
        except OSError:
            pass
        return False
    finally:
        aside.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    state = _proc_stat(pid)
    if state is not None:
        return state[0] not in "ZX"     # a zombie has exited
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _start_time(pid: int) -> str | None:
    state = _proc_stat(pid)
    return state[19] if state is not None and len(state) > 19 else None


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (Linux), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rfind(")") + 2:].split()
