"""Reading back files that cl-fir or a person wrote: run.json, config.json, result CSVs,
scenario and run TOML files.

Disks, network file systems and people damage files: a copy cut short, a file saved in
another encoding, an editor that left it empty. Every reader here raises
:class:`~cl_fir.errors.DamagedFileError` with one line naming the file and what is wrong
with it, never a parser's traceback.
"""

from __future__ import annotations

import json
import math
import tomllib
from pathlib import Path
from typing import Any

from cl_fir.errors import DamagedFileError


def read_text(path: str | Path) -> str:
    """The file as UTF-8 text; empty and undecodable files are errors."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DamagedFileError(path, "missing") from None
    except IsADirectoryError:
        raise DamagedFileError(path, "is a folder, not a file") from None
    except OSError as exc:
        raise DamagedFileError(path, f"cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise DamagedFileError(path, "empty file (0 bytes)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DamagedFileError(path, f"not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                                     f"damaged, or saved in another encoding") from None


def read_json(path: str | Path, kind: type = dict) -> Any:
    """A JSON file whose top level is a ``kind`` (an object by default)."""
    text = read_text(path)
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        end = "" if text.rstrip().endswith(("}", "]")) else "; truncated?"
        raise DamagedFileError(path, f"not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg}{end})") \
            from None
    if not isinstance(value, kind):
        raise DamagedFileError(path, f"expected a JSON {_json_kind(kind)}, found {_json_kind(type(value))}")
    return value


def _json_kind(kind: type) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "number", float: "number",
            type(None): "null"}.get(kind, kind.__name__)


def read_toml(path: str | Path) -> dict:
    """A TOML file's tables (an empty file is an error: it was meant to say something)."""
    text = read_text(path)
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DamagedFileError(path, f"not valid TOML ({exc})") from None


def read_matrix_csv(path: str | Path, task_names: list[str]) -> list[list[float]]:
    """An ``increment,<task>,...`` matrix as written by cl-fir: the header names exactly
    ``task_names``, row k starts with k, every cell is a number or empty (not evaluated)."""
    text = read_text(path)
    if not text.endswith("\n"):
        raise DamagedFileError(path, "truncated (the last line is incomplete)")
    lines = text.splitlines()
    header = lines[0].split(",")
    if header[0] != "increment" or header[1:] != list(task_names):
        raise DamagedFileError(path, f"unexpected columns {','.join(header)!r}; expected "
                                     f"{','.join(['increment', *task_names])!r}")
    if len(lines) < 2:
        raise DamagedFileError(path, "no rows (truncated?)")
    rows = []
    for n, line in enumerate(lines[1:], start=2):
        cells = line.split(",")
        if len(cells) != len(header):
            raise DamagedFileError(path, f"line {n}: {len(cells)} fields, expected {len(header)}")
        if cells[0] != str(n - 1):
            raise DamagedFileError(path, f"line {n}: expected increment {n - 1}, found {cells[0]!r}")
        row = []
        for name, cell in zip(task_names, cells[1:]):
            try:
                value = float(cell) if cell else math.nan
            except ValueError:
                raise DamagedFileError(path, f"line {n}: {name}: expected a number, found {cell!r}") from None
            row.append(value)
        rows.append(row)
    return rows
