"""Generated copies kept in the cache (the synthetic datasets): sealed when complete,
checked every time they are reused.

A copy is generated in a temporary folder and renamed into place, so it is never seen
half-written; it can still be damaged later (a file deleted, a copy cut short by a full
disk). :func:`seal` records every file's size in a manifest, the copy's last file;
:func:`problem` compares the copy with it (one ``stat`` per file: it catches missing and
truncated files, not a changed byte) and a copy with a problem is discarded and generated
again. A copy without a manifest is incomplete or was made before manifests existed, and
is generated again too.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from cl_fir.files import atomic_io

MANIFEST = ".manifest.json"


def seal(folder: Path) -> None:
    """Write the manifest of ``folder`` (call it once every file is written)."""
    folder = Path(folder)
    files = {p.relative_to(folder).as_posix(): p.stat().st_size
             for p in sorted(folder.rglob("*")) if p.is_file() and p.name != MANIFEST}
    atomic_io.write_json(folder / MANIFEST, {"files": files})


def problem(folder: Path) -> str | None:
    """What is wrong with the copy in ``folder``, or None if it matches its manifest."""
    folder = Path(folder)
    try:
        files = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))["files"]
        listed = [(str(name), int(size)) for name, size in files.items()]
    except FileNotFoundError:
        return "missing" if not folder.exists() else "no manifest (incomplete, or made by an older cl-fir)"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"its manifest {MANIFEST} is damaged"
    for name, size in listed:
        try:
            actual = (folder / name).stat().st_size
        except OSError:
            return f"{name} is missing"
        if actual != size:
            return f"{name} has {actual} bytes instead of {size}"
    return None


def discard(folder: Path) -> None:
    """Move a damaged copy out of the way in one step, then delete it."""
    folder = Path(folder)
    aside = folder.with_name(f".{folder.name}.damaged-{os.getpid()}")
    try:
        os.rename(folder, aside)
    except OSError:
        return   # already gone (another process discarded it)
    shutil.rmtree(aside, ignore_errors=True)
