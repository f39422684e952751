"""Atomic writes leave either the old file or the new one, never a partial one."""

from __future__ import annotations

import os

import pytest

from cl_fir.files.atomic_io import atomic_path, write_json, write_text


def test_write_and_replace(tmp_path):
    path = tmp_path / "sub" / "a.json"
    write_json(path, {"x": 1})
    write_text(path, "second")
    assert path.read_text() == "second"
    assert [p.name for p in path.parent.iterdir()] == ["a.json"]


def test_failure_keeps_the_old_file_and_no_temporary(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            raise RuntimeError("crash while writing")
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_files_follow_the_umask_not_mkstemps_0600(tmp_path):
    import os

    path = tmp_path / "b.txt"
    write_text(path, "x")
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def _full_disk_after_half(monkeypatch):
    """Every write puts half its data on disk, then fails as a full disk does."""
    import errno

    from cl_fir.files import atomic_io

    def faulty(fh, data, target):
        fh.write(bytes(data)[: len(data) // 2])
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic_io, "_write", faulty)


def test_a_full_disk_keeps_the_old_file_and_says_why(tmp_path, monkeypatch):
    from cl_fir.errors import OutputError

    path = tmp_path / "a.json"
    write_json(path, {"x": 1})
    _full_disk_after_half(monkeypatch)
    with pytest.raises(OutputError, match=r"cannot write .*a\.json: No space left on device \(the disk is full\)"):
        write_json(path, {"x": 2, "y": list(range(100))})
    assert path.read_text() == '{\n  "x": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["a.json"]


def test_a_checkpoint_write_reports_the_disk_error_that_torch_save_hides(tmp_path, monkeypatch):
    """torch.save turns a failing write() into an unrelated RuntimeError; the OSError is what is reported."""
    import errno

    import torch

    from cl_fir.engine.checkpoint import load_checkpoint, save_checkpoint
    from cl_fir.errors import OutputError

    path = tmp_path / "increment_1.pt"
    save_checkpoint(path, {"increment": 0, "w": torch.zeros(10)})
    _full_disk_after_half(monkeypatch)
    with pytest.raises(OutputError) as info:
        save_checkpoint(path, {"increment": 1, "w": torch.ones(1000)})
    assert info.value.errno == errno.ENOSPC and "No space left on device" in str(info.value)
    assert load_checkpoint(path)["increment"] == 0                        # the previous one, intact
    assert [p.name for p in tmp_path.iterdir()] == ["increment_1.pt"]


def test_a_read_only_folder_is_named(tmp_path, monkeypatch):
    import errno

    from cl_fir.errors import OutputError

    def read_only(*args, **kwargs):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS))

    monkeypatch.setattr("tempfile.mkstemp", read_only)
    with pytest.raises(OutputError, match=r"b\.txt: Read-only file system \(the folder is read-only\)"):
        write_text(tmp_path / "b.txt", "x")
