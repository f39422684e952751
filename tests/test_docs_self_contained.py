"""The repository's text never points at the private notes folder that the project was built
from: a user of the package does not have it, so every fact the docs need is written into
docs/ instead (papers cited by title, authors and year)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# Built from pieces so that this file does not match itself.
FOLDER = "shared" + "/"
NOTES = ("anchors", "avalanche", "datasets", "dml_methods", "mclfir", "modc_asenpp")
NOTE_PATTERN = re.compile(r"\breference" + "/" + r"(?:" + "|".join(NOTES) + r")\.md")
SKIPPED_DIRS = {".git", ".venv", "results", "build", "dist", "__pycache__", ".pytest_cache"}


def _repository_files() -> list[Path]:
    """Tracked files in a git checkout; otherwise every file outside build and cache folders."""
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60)
        return [ROOT / name for name in out.stdout.decode().split("\0") if name]
    except (OSError, subprocess.SubprocessError):
        return [p for p in ROOT.rglob("*") if p.is_file() and not SKIPPED_DIRS & set(p.relative_to(ROOT).parts)
                and not any(part.endswith(".egg-info") for part in p.relative_to(ROOT).parts)]


def _text_files() -> dict[str, str]:
    texts = {}
    for path in _repository_files():
        if not path.is_file():
            continue
        data = path.read_bytes()
        if b"\0" in data:
            continue   # binary: images, checkpoints
        texts[path.relative_to(ROOT).as_posix()] = data.decode("utf-8", errors="replace")
    return texts


def _hits(texts: dict[str, str], match) -> list[str]:
    return [f"{name}:{i}: {line.strip()[:100]}" for name, text in texts.items()
            for i, line in enumerate(text.splitlines(), 1) if match(line)]


def test_no_file_points_at_the_private_notes_folder():
    texts = _text_files()
    assert "README.md" in texts and "docs/datasets.md" in texts
    assert _hits(texts, lambda line: FOLDER in line) == []


def test_no_file_cites_a_private_note_by_name():
    # every file, scenario descriptions included, cites docs/ or the paper instead
    assert _hits(_text_files(), lambda line: NOTE_PATTERN.search(line)) == []
