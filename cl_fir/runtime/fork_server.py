"""Run commands in child processes that start warm: a fork server.

``cl-fir sweep`` (and ``tune`` and ``budget``, which use it) runs every cell as its own
process, so that a crash in one never stops the others. A fresh Python process spends
about 8 s of CPU importing torch, torchvision, timm and avalanche-lib before it does
anything (measured on the 2-core reference machine): a sixth of a synth-4inc cell.

:class:`WarmStarter` starts one server: a fresh interpreter that imports the ``preload``
modules once and then forks one child per command; the child calls the ``entry`` function
(``"module:function"``) with the command's arguments. Every command is still a separate
process, with its own memory, log file and exit code, but it starts in milliseconds. The
server only imports and forks: it runs no tensor code and no thread, so a child inherits
no thread pool or lock it cannot use, and it never initialises CUDA (a child could not use
it after the fork; should an import ever do so, the server stops and commands run cold). A child leaves through the interpreter's exit
functions, as a process ending normally does.

Protocol on the server's pipes, one line each: the parent writes
``{"id", "args", "log", "threads"}`` as JSON; the server answers ``started <id>`` after the
fork and ``exit <id> <code>`` when the child ends (a negative code: killed by that
signal). When the parent closes the server's input, the server waits for its children
and exits. Outside Linux (Windows has no ``fork``; on macOS, forking after system
frameworks are loaded is unsafe, which is why Python itself spawns there), or when the
server is gone, a command runs as the ``cold`` command line followed by its arguments.
"""

from __future__ import annotations

import importlib
import itertools
import json
import os
import select
import signal
import subprocess
import sys
import threading
from pathlib import Path


def run_subprocess(cmd: list[str], log: Path, threads: int | None = None) -> int:
    """Run ``cmd`` with stdout and stderr written to ``log``; return its exit code.
    ``threads``: torch threads of the child unless ``OMP_NUM_THREADS`` is set."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if threads is not None:
        env.setdefault("OMP_NUM_THREADS", str(threads))
    with open(log, "w", encoding="utf-8") as fh:
        return subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, check=False).returncode


class _Slot:
    def __init__(self) -> None:
        self.started = False
        self.code: int | None = None
        self.done = threading.Event()


class WarmStarter:
    """A fork server; :meth:`run` may be called from several threads at once. Use it as a
    context manager: leaving it closes the server (after its running children end)."""

    def __init__(self, preload: list[str], entry: str, cold: list[str]) -> None:
        self.cold = list(cold)
        self._lock = threading.Lock()
        self._slots: dict[int, _Slot] = {}
        self._ids = itertools.count()
        self._server: subprocess.Popen | None = None
        if sys.platform.startswith("linux"):
            setup = json.dumps({"preload": list(preload), "entry": entry})
            try:
                self._server = subprocess.Popen(
                    [sys.executable, "-c", "import sys; from cl_fir.runtime.fork_server import serve; serve(sys.argv[1])",
                     setup], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
            except OSError:
                self._server = None
        if self._server is not None:
            threading.Thread(target=self._read_replies, name="fork server replies", daemon=True).start()

    def run(self, args: list[str], log: Path, threads: int | None = None) -> int:
        """Run the command ``args`` in a child with stdout and stderr written to ``log``;
        return its exit code. ``threads``: torch threads unless ``OMP_NUM_THREADS`` is set."""
        slot = _Slot()
        with self._lock:
            request_id = next(self._ids)
            sent = self._send({"id": request_id, "args": list(args), "log": str(log), "threads": threads}, slot)
        if sent:
            slot.done.wait()
            if slot.code is not None:
                return slot.code
            if slot.started:   # the server stopped while the child ran: its exit code is lost
                with open(log, "a", encoding="utf-8") as fh:
                    fh.write("error: the fork server stopped while this command ran\n")
                return 255
        return run_subprocess(self.cold + list(args), log, threads)

    def _send(self, request: dict, slot: _Slot) -> bool:
        if self._server is None or self._server.poll() is not None:
            return False
        self._slots[request["id"]] = slot
        try:
            self._server.stdin.write(json.dumps(request) + "\n")
            self._server.stdin.flush()
        except (OSError, ValueError):
            self._slots.pop(request["id"], None)
            return False
        return True

    def _read_replies(self) -> None:
        for line in self._server.stdout:
            fields = line.split()
            if len(fields) < 2 or not fields[1].isdigit() or fields[0] not in ("started", "exit"):
                continue
            with self._lock:
                slot = self._slots.get(int(fields[1]))
                if slot is None:
                    continue
                if fields[0] == "started":
                    slot.started = True
                elif len(fields) == 3:
                    slot.code = int(fields[2])
                    del self._slots[int(fields[1])]
                    slot.done.set()
        with self._lock:   # the server is gone: release every waiting caller
            for slot in self._slots.values():
                slot.done.set()
            self._slots.clear()

    def close(self) -> None:
        if self._server is None:
            return
        try:
            self._server.stdin.close()
        except OSError:
            pass
        self._server.wait()

    def __enter__(self) -> WarmStarter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve(setup: str) -> None:
    """The server's main loop (see the module's docstring). SIGINT is ignored here, so that
    an interrupt from the terminal reaches the children while the server stays to report
    their exit codes; each child restores Python's own handler."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    global _REPLIES
    _REPLIES = os.dup(1)   # replies get a descriptor of their own; whatever an import prints goes to stderr
    os.dup2(2, 1)
    config = json.loads(setup)
    for module in config["preload"]:
        importlib.import_module(module)
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_initialized():
        return   # a forked child could not use CUDA: the parent falls back to fresh interpreters
    running: dict[int, int] = {}   # pid -> request id
    pending = b""
    open_input = True
    while open_input or running:
        if open_input and select.select([0], [], [], 0.1)[0]:
            chunk = os.read(0, 65536)
            open_input = bool(chunk)
            pending += chunk
            while b"\n" in pending:
                line, pending = pending.split(b"\n", 1)
                request = json.loads(line)
                pid = os.fork()
                if pid == 0:
                    _child(request, config["entry"])   # never returns
                running[pid] = request["id"]
                _reply(f"started {request['id']}")
        elif not open_input:
            select.select([], [], [], 0.1)
        while running:
            pid, status = os.waitpid(-1, os.WNOHANG)
            if pid == 0:
                break
            _reply(f"exit {running.pop(pid)} {os.waitstatus_to_exitcode(status)}")


_REPLIES = 1


def _reply(line: str) -> None:
    try:
        os.write(_REPLIES, (line + "\n").encode())
    except OSError:   # the parent is gone; the children still finish their work
        pass


def _child(request: dict, entry: str) -> None:
    """In the forked child: input from /dev/null, file descriptors 1 and 2 to the log (so
    C libraries' output lands there too), the thread count, then ``entry(args)``; a
    ``SystemExit`` gives the exit code, any other exception prints its traceback (code 1)."""
    code = 1
    try:
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.close(_REPLIES)   # only the server answers; the parent sees the pipe close when the server ends
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.close(null)
        fd = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        sys.stdout.reconfigure(line_buffering=True)   # as PYTHONUNBUFFERED for a subprocess: the log is live
        threads = request.get("threads")
        if threads is not None and "OMP_NUM_THREADS" not in os.environ:
            # The OpenMP runtime read the variable when the server loaded it; the call sets it now.
            os.environ["OMP_NUM_THREADS"] = str(threads)
            import torch

            torch.set_num_threads(threads)
        module, function = entry.split(":")
        try:
            getattr(importlib.import_module(module), function)(request["args"])
            code = 0
        except SystemExit as exc:
            if exc.code is None or isinstance(exc.code, int):
                code = exc.code or 0
            else:
                print(exc.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        try:
            import atexit

            atexit._run_exitfuncs()
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
