"""Checkpoints at increment boundaries and every N steps: written atomically, verified
before they replace anything and again before they are loaded.

A checkpoint is an ordinary ``torch.save`` file, a zip archive whose every record carries a
CRC32 of its bytes; its central directory sits at the very end. Reading every record back
and checking its CRC32 therefore catches a truncated copy (no end record), a flipped bit
(a record fails its check) and a file that is not a checkpoint at all, before ``torch.load``
sees it (``torch.load`` itself does not check the CRCs). The check lives in the file, so a
checkpoint and its checksum can never get out of step, and ``torch.load`` still opens it.
"""

from __future__ import annotations

import contextlib
import zipfile
from pathlib import Path

import torch

from cl_fir.files.atomic_io import atomic_file
from cl_fir.errors import DamagedFileError, OutputError

_ZIP_MAGIC = b"PK\x03\x04"


class DamagedCheckpoint(DamagedFileError):
    """A checkpoint is empty, truncated, fails its integrity check or cannot be loaded."""


def save_checkpoint(path: Path, payload: dict) -> None:
    """Write ``payload`` to ``path``; the new file replaces the old one only once it has been
    flushed to disk and read back intact."""
    def verify(tmp: Path) -> None:
        try:
            verify_checkpoint(tmp, shown_as=path)
        except DamagedCheckpoint as exc:
            raise OutputError(f"cannot write {path}: the written copy reads back {exc.problem}") from None

    with _crc32_on(), atomic_file(path, verify=verify) as fh:
        torch.save(payload, fh)


def verify_checkpoint(path: Path, shown_as: Path | None = None) -> None:
    """Raise :class:`DamagedCheckpoint` unless every record of the file is intact."""
    shown = shown_as or path
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
            size = fh.seek(0, 2)
    except FileNotFoundError:
        raise DamagedCheckpoint(shown, "missing") from None
    except OSError as exc:
        raise DamagedCheckpoint(shown, f"cannot be read ({exc.strerror or exc})") from None
    if size == 0:
        raise DamagedCheckpoint(shown, "empty file (0 bytes)")
    if head != _ZIP_MAGIC:
        raise DamagedCheckpoint(shown, "not a torch checkpoint (damaged, or another kind of file)")
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except zipfile.BadZipFile:
        raise DamagedCheckpoint(shown, f"truncated ({size} bytes, the archive's end record is missing)") from None
    except (OSError, EOFError, ValueError, RuntimeError) as exc:   # zipfile's errors for mangled headers
        raise DamagedCheckpoint(shown, f"its archive structure is damaged ({_one_line(exc)})") from None
    if bad is not None:
        raise DamagedCheckpoint(shown, f"record {bad} fails its CRC32 check (bytes changed on disk)")


def load_checkpoint(path: Path) -> dict:
    """The checkpoint's payload, after :func:`verify_checkpoint`."""
    verify_checkpoint(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:  # noqa: BLE001 - intact bytes that still do not load: say so in one line
        raise DamagedCheckpoint(path, f"cannot be loaded ({type(exc).__name__}: {_one_line(exc)})") from None
    if not isinstance(payload, dict) or "increment" not in payload:
        raise DamagedCheckpoint(path, "not a cl-fir checkpoint (no increment in it)")
    return payload


def _one_line(exc: BaseException) -> str:
    """The first sentence of an exception's message (torch's run to several lines of advice)."""
    text = str(exc).strip().splitlines()
    return text[0].split(". ")[0].rstrip(".")[:200] if text else type(exc).__name__


@contextlib.contextmanager
def _crc32_on():
    """``torch.save`` writes the records' CRC32s unless someone switched that off; the check needs them."""
    get = getattr(torch.serialization, "get_crc32_options", None)
    if get is None or get():
        yield
        return
    torch.serialization.set_crc32_options(True)
    try:
        yield
    finally:
        torch.serialization.set_crc32_options(False)
