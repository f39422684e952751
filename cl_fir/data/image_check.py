"""Check the images a dataset lists before training: missing, empty or unreadable files.

Real datasets have holes: DARN is re-crawled from dead links, FashionIQ mirrors lose
images, copies get truncated. A run checks every image it will use when the dataset is
opened, skips what is bad (or refuses to start with ``--strict``) and counts it, so it
never dies on a bad image hours into training.

Levels:

``exists``  the file exists and is not empty;
``header``  PIL identifies it as an image with a non-zero size (reads only the header;
            the default for runs);
``decode``  the whole image decodes (catches truncated files; what ``cl-fir data
            verify`` does by default).

A listed path that does not exist is also looked up with the other usual extensions
(``.jpg``/``.jpeg``/``.png``, either case): mirrors re-encode images and keep the
file lists. Results are cached per list of paths and level, keyed by every file's size
and modification time, so only the first run on a dataset pays for the check; a damaged
cache file is ignored and the images are checked again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image

from cl_fir.files import atomic_io

LEVELS = ("exists", "header", "decode")
ALTERNATE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".JPG", ".JPEG", ".PNG")
_CHECK_VERSION = 1


@dataclass
class ImageCheck:
    """Outcome for a list of paths, index-aligned with it."""

    paths: list[Path]                                   # resolved (maybe another extension)
    bad: dict[int, str] = field(default_factory=dict)   # index -> reason
    level: str = "header"
    other_extension: int = 0                            # found only under another extension
    from_cache: bool = False

    @property
    def num_bad(self) -> int:
        return len(self.bad)

    def reasons(self) -> dict[str, int]:
        return reason_counts(self.bad.values())


def reason_counts(reasons: Iterable[str]) -> dict[str, int]:
    """Count of bad images per reason category (the text before the first colon)."""
    return dict(Counter(reason.split(":", 1)[0] for reason in reasons))


def resolve(path: Path) -> tuple[Path, os.stat_result | None]:
    """``path`` if it exists, else the same name with another image extension, else ``path``."""
    try:
        return path, path.stat()
    except OSError:
        pass
    for ext in ALTERNATE_EXTENSIONS:
        if ext != path.suffix:
            other = path.with_suffix(ext)
            try:
                return other, other.stat()
            except OSError:
                continue
    return path, None


def check_file(path: Path, st: os.stat_result | None, level: str) -> str | None:
    """Why the image at ``path`` is unusable, or None when it is fine."""
    if st is None:
        return "missing"
    if st.st_size == 0:
        return "empty: file has 0 bytes"
    if level == "exists":
        return None
    try:
        with Image.open(path) as img:
            if img.width <= 0 or img.height <= 0:
                return "unreadable: zero-sized image"
            if level == "decode":
                img.load()
    except Exception as exc:   # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError...
        kind = "unreadable" if level != "decode" else "corrupt"
        return f"{kind}: {type(exc).__name__}: {exc}"
    return None


def check_images(paths: Sequence[Path], level: str = "header", cache_dir: Path | None = None,
                 progress_factory=None, workers: int = 8) -> ImageCheck:
    """Check every path at ``level``; reuse a cached result when no file changed."""
    if level not in LEVELS:
        raise ValueError(f"image check level must be one of {', '.join(LEVELS)}, got {level!r}")
    paths = [Path(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        resolved = [r for part in pool.map(lambda c: [resolve(p) for p in c], _chunks(paths, 512)) for r in part]
    signature = _signature(resolved, level)
    cache_file = None
    if cache_dir is not None:
        cache_file = Path(cache_dir) / "image-checks" / f"{_list_key(paths, level)}.json"
        cached = _read_cache(cache_file, signature)
        if cached is not None:
            return ImageCheck([p for p, _ in resolved], cached, level, _other_ext(paths, resolved), True)

    def some(items):
        return [check_file(p, st, level) for p, st in items]

    if level == "exists":
        reasons = some(resolved)
    else:
        label = f"checking {len(paths)} images ({level})"
        with (progress_factory(len(paths), label) if progress_factory else nullcontext()) as advance:
            reasons = []
            with ThreadPoolExecutor(max_workers=workers) as pool:
                for part in pool.map(some, _chunks(resolved, 64)):
                    reasons.extend(part)
                    if advance:
                        advance(len(part))
    bad = {i: r for i, r in enumerate(reasons) if r is not None}
    if cache_file is not None:
        try:
            atomic_io.write_json(cache_file, {"version": _CHECK_VERSION, "signature": signature,
                                              "bad": {str(i): r for i, r in bad.items()}})
        except OSError:
            pass   # an unwritable cache only costs time
    return ImageCheck([p for p, _ in resolved], bad, level, _other_ext(paths, resolved), False)


def _chunks(items: list, size: int) -> list[list]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _other_ext(paths, resolved) -> int:
    return sum(1 for p, (r, st) in zip(paths, resolved) if st is not None and r != p)


def _list_key(paths: list[Path], level: str) -> str:
    h = hashlib.sha1(f"v{_CHECK_VERSION}\n{level}\n".encode())
    for p in paths:
        h.update(os.path.abspath(p).encode() + b"\n")
    return h.hexdigest()[:20]


def _signature(resolved, level: str) -> str:
    h = hashlib.sha1(level.encode())
    for p, st in resolved:
        h.update(f"{p}\t{st.st_size}\t{st.st_mtime_ns}\n".encode() if st is not None else f"{p}\t-\n".encode())
    return h.hexdigest()


def _read_cache(path: Path, signature: str) -> dict[int, str] | None:
    """The cached result, or None when there is none or it is damaged (the check then runs again)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("version") != _CHECK_VERSION or data.get("signature") != signature:
            return None
        return {int(i): str(r) for i, r in data["bad"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
