"""Atomic writes leave either the old file or the new one, never a partial one."""

from __future__ import annotations

import pytest

from cl_fir.atomic_io import atomic_path, write_json, write_text


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
