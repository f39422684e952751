"""Bad input, table-driven: every case exits non-zero with one `error:` line that names the
place and what was expected, shows no traceback, and leaves no half-written file.

Also damaged files cl-fir reads back (checkpoints, run.json, config.json, result CSVs,
scenario and run files, weights, caches), a full disk or read-only folder while a run
writes, and two processes on one run folder. Damage is done to copies of one tiny run made
once per module; disk faults are injected at the write call, never by filling a disk."""

from __future__ import annotations

import errno
import json
import os
import shutil
import socket
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cl_fir.files import atomic_io, readback
from cl_fir.cli import app
from cl_fir.engine.checkpoint import verify_checkpoint
from cl_fir.errors import CLFirError
from conftest import write_scenario
from dataset_fixtures import make_all

runner = CliRunner()
TINY = ["--set", "model.backbone=test_resnet", "--set", "model.embed_dim=16", "--set", "model.attr_dim=8",
        "--set", "transforms.resize=32", "--set", "transforms.crop=32", "--epochs", "1",
        "--samples-per-epoch", "16", "--batch-size", "8", "--quiet"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad-inputs-data")
    make_all(root)
    return root


@pytest.fixture(scope="module")
def saved_runs(tmp_path_factory, cache_dir):
    """One tiny run of three increments, kept twice: stopped after increment 2 (checkpoints of
    increments 1 and 2 on disk) and complete. Cases damage copies of these."""
    from cl_fir.runner import execute_run, resolve_config, resume_run

    root = tmp_path_factory.mktemp("saved-runs")
    scenario = write_scenario(root, '[["skirt_length"], ["sleeve_length"], ["coat_length"]]', name="tiny3.toml")
    cfg = resolve_config("finetune", str(scenario), output_dir=str(root / "out"), deterministic=True)
    run = execute_run(cfg, stop_after=2)
    stopped = root / "stopped"
    shutil.copytree(run, stopped)
    resume_run(run)
    return {"stopped": stopped, "complete": run, "scenario": scenario}


@pytest.fixture
def ctx(pristine, tmp_path, tiny_scenario, monkeypatch, request):
    monkeypatch.delenv("CL_FIR_DATA", raising=False)
    data = tmp_path / "data"
    shutil.copytree(pristine, data)
    out = tmp_path / "out"

    def copy_run(which: str = "stopped", name: str = "run") -> Path:
        dest = tmp_path / "runs" / name
        shutil.copytree(request.getfixturevalue("saved_runs")[which], dest)
        return dest

    procs: list[subprocess.Popen] = []
    yield {"data": data, "out": out, "tmp": tmp_path, "tiny": str(tiny_scenario), "copy_run": copy_run,
           "monkeypatch": monkeypatch, "procs": procs}
    for proc in procs:
        proc.kill()
        proc.wait()


def _edit_line(path: Path, line: int, text: str) -> None:
    lines = path.read_text().splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")


def _real(c, scenario="fashionai-4inc", *extra):
    return ["run", "--strategy", "finetune", "--scenario", scenario, "--data-root", str(c["data"]),
            "--output-dir", str(c["out"]), *TINY, *extra]


def _tiny(c, *extra, strategy="finetune"):
    return ["run", "--strategy", strategy, "--scenario", c["tiny"], "--output-dir", str(c["out"]), *TINY, *extra]


def _test_image(c) -> Path:
    """An image of DARN's test split (used by every DARN scenario)."""
    first = (c["data"] / "DARN" / "filenames_test.txt").read_text().splitlines()[0]
    return c["data"] / "DARN" / first


def _setup_decode_scenario(c):
    src = Path(__file__).resolve().parents[1] / "scenarios" / "darn-3inc.toml"
    text = src.read_text().replace('key = "DARN"', 'key = "DARN"\nimage_check = "decode"')
    (c["tmp"] / "darn-decode.toml").write_text(text)
    img = _test_image(c)
    img.write_bytes(img.read_bytes()[:200])
    return str(c["tmp"] / "darn-decode.toml")


def _stopped_run(c):
    res = runner.invoke(app, _tiny(c, "--run-id", "r"))
    assert res.exit_code == 0, res.output
    return str(c["out"] / "tiny" / "finetune" / "r")


def _truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def _flip_a_tensor_byte(path: Path) -> None:
    """Flip one byte in the middle of the checkpoint's largest tensor (a disk's bit rot)."""
    with zipfile.ZipFile(path) as archive:
        record = max(archive.infolist(), key=lambda r: r.file_size)
    data = bytearray(path.read_bytes())
    data[record.header_offset + 100 + record.file_size // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _resume(run: Path) -> list[str]:
    return ["run", "--resume", str(run), "--quiet"]


def _damaged_resume(c, damage, which="stopped"):
    run = c["copy_run"](which)
    damage(run)
    return _resume(run)


def _only_checkpoint(run: Path, damage) -> None:
    (run / "checkpoints" / "increment_1.pt").unlink()
    damage(run / "checkpoints" / "increment_2.pt")


def _compare_damaged(c, damage, which="complete"):
    run = c["copy_run"](which)
    damage(run)
    return ["compare", str(run), "--out", str(c["tmp"] / "cmp")]


def _file_is(path: Path, content: bytes) -> None:
    path.write_bytes(content)


NOT_UTF8 = "name = \"caf\u00e9\"\n".encode("latin-1")


def _disk_fault(c, name_part: str, code: int = errno.ENOSPC, sticky: bool = False) -> None:
    """Writes of files whose name contains ``name_part`` write half their data, then fail with
    ``code``; with ``sticky`` every later write fails too (a folder turned read-only)."""
    real, state = atomic_io._write, {"on": False}

    def faulty(fh, data, target):
        if name_part in Path(target).name or (sticky and state["on"]):
            state["on"] = True
            fh.write(bytes(data)[: len(data) // 2])
            raise OSError(code, os.strerror(code))
        return real(fh, data, target)

    c["monkeypatch"].setattr(atomic_io, "_write", faulty)


def _resume_with_disk_fault(c, name_part: str, code: int = errno.ENOSPC, sticky: bool = False) -> list[str]:
    run = c["copy_run"]()
    _disk_fault(c, name_part, code, sticky)
    return _resume(run)


def _lock_of(c, run: Path, alive: bool = True, **fields) -> subprocess.Popen:
    """Lock ``run`` for a process that is still running (a first run, still going) or is gone."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    c["procs"].append(proc)
    if not alive:
        proc.kill()
        proc.wait()
    run.mkdir(parents=True, exist_ok=True)
    (run / ".cl-fir.lock").write_text(json.dumps({"pid": proc.pid, "host": socket.gethostname(),
                                                   "since": "2026-01-01T00:00:00+00:00", **fields}))
    return proc


def _held_lock(c, which="stopped") -> Path:
    run = c["copy_run"](which)
    _lock_of(c, run)
    return run


def _overwrite_a_held_folder(c):
    held = c["out"] / "tiny" / "finetune" / "seed0"
    held.mkdir(parents=True)
    (held / "config.json").write_text("{}")
    _lock_of(c, held)
    return _tiny(c, "--overwrite")


CASES = [
    ("real scenario without a data root",
     lambda c: ["run", "--scenario", "fashionai-4inc", "--output-dir", str(c["out"]), *TINY], "--data-root"),
    ("data root does not exist", lambda c: _real(c)[:6] + [str(c["tmp"] / "nope")] + _real(c)[7:],
     "data root does not exist"),
    ("meta.json missing", lambda c: ((c["data"] / "meta.json").unlink(), _real(c))[1], "meta.json: missing"),
    ("meta.json not JSON", lambda c: ((c["data"] / "meta.json").write_text("{oops"), _real(c))[1],
     "meta.json: not valid JSON"),
    ("empty label file", lambda c: ((c["data"] / "FashionAI" / "label_train.txt").write_text(""), _real(c))[1],
     "label_train.txt: no samples"),
    ("malformed label line", lambda c: (_edit_line(c["data"] / "FashionAI" / "label_train.txt", 3, "2 x 1"),
                                        _real(c))[1], "label_train.txt:3: expected"),
    ("label value out of range", lambda c: (_edit_line(c["data"] / "FashionAI" / "label_train.txt", 2, "1 0 9"),
                                            _real(c))[1], "label_train.txt:2: value 9 out of range"),
    ("query image id out of range", lambda c: (_edit_line(c["data"] / "FashionAI" / "query_test.txt", 1, "99 0 0"),
                                               _real(c))[1], "query_test.txt:1: image id 99 out of range"),
    ("unreadable image with --strict",
     lambda c: (_test_image(c).write_text("no"),
                _real(c, "darn-3inc", "--strict"))[1], "missing or unreadable"),
    ("truncated image with --strict", lambda c: _real(c, _setup_decode_scenario(c), "--strict"), "corrupt"),
    ("unknown strategy", lambda c: _tiny(c, strategy="nope"), "unknown strategy 'nope'"),
    ("unknown scenario", lambda c: ["run", "--scenario", "nope", "--output-dir", str(c["out"]), *TINY],
     "unknown scenario 'nope'"),
    ("unknown backbone", lambda c: _tiny(c, "--set", "model.backbone=not_a_net"), "model.backbone"),
    ("negative epochs", lambda c: _tiny(c, "--epochs", "-2"), "train.epochs (--epochs): expected an integer >= 1"),
    ("batch of one doublet", lambda c: _tiny(c, "--batch-size", "1"), "expected an integer >= 2"),
    ("output dir is a file", lambda c: (c["tmp"].joinpath("file").write_text("x"),
                                        _tiny(c)[:6] + [str(c["tmp"] / "file")] + _tiny(c)[7:])[1], "--output-dir"),
    ("resume a folder that is not a run", lambda c: ["run", "--resume", str(c["tmp"])], "not a cl-fir run directory"),
    ("resume into another scenario", lambda c: ["run", "--resume", _stopped_run(c), "--scenario", "synth-4inc"],
     "cannot be combined with --scenario"),
    ("--set without =", lambda c: _tiny(c, "--set", "train.epochs"), "expected KEY=VALUE"),
    ("budget factor not a number", lambda c: ["budget", "--factors", "1/16,half", "--output-dir", str(c["out"])],
     "--factors: expected positive numbers or fractions such as 0.5 or 1/16, got 'half'"),
    ("budget factor zero", lambda c: ["budget", "--factors", "0", "--output-dir", str(c["out"])], "got '0'"),
    ("curves on an unknown split", lambda c: ["curves", "--split", "train"], "--split: expected valid or test"),
    ("--set unknown key", lambda c: _tiny(c, "--set", "train.nope=1"), "nope"),
    ("--opt of the wrong type", lambda c: _tiny(c, "--opt", "kd_weight=lots", strategy="mcl_fir"), "kd_weight"),
    ("scenario file not TOML", lambda c: (c["tmp"].joinpath("s.toml").write_text("name = ["),
                                          ["run", "--scenario", str(c["tmp"] / "s.toml"), "--output-dir", str(c["out"])])[1],
     "not valid TOML"),
    ("strategy file without the class", lambda c: (c["tmp"].joinpath("m.py").write_text("x = 1\n"),
                                                   _tiny(c, strategy=f"{c['tmp']}/m.py:Mine"))[1],
     "no Strategy subclass 'Mine'"),
    ("run file with an unknown key", lambda c: (c["tmp"].joinpath("r.toml").write_text("epochs = 3\n"),
                                                ["run", "--config", str(c["tmp"] / "r.toml"), "--output-dir",
                                                 str(c["out"])])[1],
     "unknown key 'epochs'"),
    ("evaluation split", lambda c: _tiny(c, "--set", "eval.split=train"), "eval.split: expected 'valid' or 'test'"),
    ("missing weights file", lambda c: _tiny(c, "--weights", str(c["tmp"] / "w.pth")), "w.pth"),
    ("unknown device", lambda c: _tiny(c, "--device", "tpu"), "--device"),
    ("verify an unknown dataset", lambda c: ["data", "verify", "imagenet", "--data-root", str(c["data"])],
     "unknown dataset 'imagenet'"),
    ("compare nothing", lambda c: ["compare", "--root", str(c["tmp"])], "nothing to compare"),
    # damaged files cl-fir reads back
    ("resume: the only checkpoint is truncated",
     lambda c: _damaged_resume(c, lambda r: _only_checkpoint(r, _truncate)),
     "increment_2.pt is damaged: truncated"),
    ("resume: the only checkpoint is empty",
     lambda c: _damaged_resume(c, lambda r: _only_checkpoint(r, lambda p: _file_is(p, b""))),
     "increment_2.pt is damaged: empty file (0 bytes)"),
    ("resume: both checkpoints damaged (bit rot, truncation)",
     lambda c: _damaged_resume(c, lambda r: (_flip_a_tensor_byte(r / "checkpoints" / "increment_2.pt"),
                                             _truncate(r / "checkpoints" / "increment_1.pt"))),
     "fails its CRC32 check"),
    ("resume: a checkpoint that is another kind of file",
     lambda c: _damaged_resume(c, lambda r: _only_checkpoint(r, lambda p: _file_is(p, b"<html>502</html>"))),
     "not a torch checkpoint"),
    ("resume: run.json truncated", lambda c: _damaged_resume(c, lambda r: _truncate(r / "run.json")),
     "run.json: not valid JSON"),
    ("resume: run.json empty", lambda c: _damaged_resume(c, lambda r: _file_is(r / "run.json", b"")),
     "run.json: empty file (0 bytes)"),
    ("resume: config.json not UTF-8",
     lambda c: _damaged_resume(c, lambda r: _file_is(r / "config.json", b'{"strategy": "\xff"}')),
     "config.json: not UTF-8 text (byte 0xff"),
    ("resume: config.json not an object", lambda c: _damaged_resume(c, lambda r: _file_is(r / "config.json", b"[]")),
     "config.json: expected a JSON object, found array"),
    ("scenario file not UTF-8", lambda c: (c["tmp"].joinpath("s.toml").write_bytes(NOT_UTF8),
                                           _tiny(c)[:4] + [str(c["tmp"] / "s.toml")] + _tiny(c)[5:])[1],
     "s.toml: not UTF-8 text (byte 0xe9"),
    ("scenario file empty", lambda c: (c["tmp"].joinpath("s.toml").write_bytes(b""),
                                       _tiny(c)[:4] + [str(c["tmp"] / "s.toml")] + _tiny(c)[5:])[1],
     "s.toml: empty file (0 bytes)"),
    ("run file not UTF-8", lambda c: (c["tmp"].joinpath("r.toml").write_bytes(NOT_UTF8),
                                      ["run", "--config", str(c["tmp"] / "r.toml"), "--output-dir", str(c["out"])])[1],
     "r.toml: not UTF-8 text"),
    ("run file empty", lambda c: (c["tmp"].joinpath("r.toml").write_bytes(b""),
                                  ["run", "--config", str(c["tmp"] / "r.toml"), "--output-dir", str(c["out"])])[1],
     "r.toml: empty file"),
    ("compare: matrix.csv cut short", lambda c: _compare_damaged(c, lambda r: _truncate(r / "matrix.csv", 0.8)),
     "matrix.csv: truncated"),
    ("compare: matrix.csv with other columns",
     lambda c: _compare_damaged(c, lambda r: _file_is(r / "matrix.csv", b"increment,a,b\n1,2,3\n")),
     "matrix.csv: unexpected columns"),
    ("compare: a metric matrix with a non-number",
     lambda c: _compare_damaged(c, lambda r: (r / "matrix_recall_at_1.csv").write_text(
         (r / "matrix_recall_at_1.csv").read_text().replace(".", "x", 1))),
     "matrix_recall_at_1.csv: line 2: skirt_length: expected a number"),
    ("compare: a complete run missing its last matrix row",
     lambda c: _compare_damaged(c, lambda r: (r / "matrix.csv").write_text(
         "".join((r / "matrix.csv").read_text().splitlines(keepends=True)[:-1]))),
     "matrix.csv: 2 rows, expected 3"),
    ("compare: cost.json truncated", lambda c: _compare_damaged(c, lambda r: _truncate(r / "cost.json")),
     "cost.json: not valid JSON"),
    ("compare: run.json not UTF-8", lambda c: _compare_damaged(c, lambda r: _file_is(r / "run.json", b"\xfe\xff{}")),
     "run.json: not UTF-8 text"),
    ("compare: run.json without its tasks",
     lambda c: _compare_damaged(c, lambda r: _file_is(r / "run.json", b'{"scenario": "tiny", "strategy": "f", '
                                                                      b'"seed": 0}')),
     "run.json: missing tasks"),
    ("weights file truncated",
     lambda c: (_truncate_copy(c["copy_run"]("complete") / "checkpoints" / "increment_3.pt", c["tmp"] / "w.pt"),
                _tiny(c, "--weights", str(c["tmp"] / "w.pt")))[1],
     "w.pt: not a readable torch checkpoint, truncated or damaged?"),
    ("weights file empty", lambda c: (c["tmp"].joinpath("w.pt").write_bytes(b""),
                                      _tiny(c, "--weights", str(c["tmp"] / "w.pt")))[1],
     "w.pt: empty file (0 bytes)"),
    # a full disk or a read-only folder while the run writes
    ("full disk while writing matrix.csv", lambda c: _resume_with_disk_fault(c, "matrix.csv"),
     "matrix.csv: No space left on device (the disk is full)"),
    ("full disk while writing a checkpoint", lambda c: _resume_with_disk_fault(c, "increment_3.pt"),
     "increment_3.pt: No space left on device (the disk is full); run"),
    ("folder turns read-only while writing a checkpoint",
     lambda c: _resume_with_disk_fault(c, "increment_3.pt", errno.EROFS, sticky=True),
     "Read-only file system (the folder is read-only)"),
    # two processes on one run folder
    ("resume a run another process is running",
     lambda c: _resume(_held_lock(c)), "is in use by another cl-fir run (pid"),
    ("--overwrite a run another process is running",
     lambda c: _overwrite_a_held_folder(c), "seed0 is in use by another cl-fir run (pid"),
]

#: What else must hold after some cases: the run marked failed with its last good checkpoint
#: intact, a folder in use left alone.
AFTER = {
    "full disk while writing matrix.csv": lambda c: _failed_keeping(c, "end of increment 2", 2),
    "full disk while writing a checkpoint": lambda c: _failed_keeping(c, "end of increment 2", 3),
    "folder turns read-only while writing a checkpoint": lambda c: _failed_keeping(c, None, 3),
    "--overwrite a run another process is running":
        lambda c: (c["out"] / "tiny" / "finetune" / "seed0" / "config.json").read_text() == "{}",
}


def _failed_keeping(c, last: str | None, matrix_rows: int) -> bool:
    run = c["tmp"] / "runs" / "run"
    info = readback.read_json(run / "run.json")
    if last is not None:   # run.json could be updated: the failure and the last good checkpoint are in it
        assert info["status"] == "failed" and "No space left on device" in info["error"], info
        assert info["last_checkpoint"]["position"] == last
    else:                  # it could not: still the state before the failure
        assert info["status"] == "running"
    for name in ("increment_1.pt", "increment_2.pt"):
        verify_checkpoint(run / "checkpoints" / name)
    assert not (run / "checkpoints" / "increment_3.pt").exists()
    assert len(readback.read_text(run / "matrix.csv").splitlines()) == 1 + matrix_rows
    return True


def _truncate_copy(src: Path, dest: Path) -> None:
    shutil.copyfile(src, dest)
    _truncate(dest)


def _unreadable_results(root: Path) -> set[Path]:
    """Result files under ``root`` (in run folders) that do not read back whole."""
    bad = set()
    for path in root.rglob("*"):
        run = path.parent.parent if path.parent.name == "checkpoints" else path.parent
        if not (run / "config.json").exists() or not path.is_file():
            continue
        try:
            if path.suffix == ".json":
                readback.read_json(path)
            elif path.suffix == ".csv":
                text = readback.read_text(path)
                assert text.endswith("\n") and len({ln.count(",") for ln in text.splitlines()}) == 1
            elif path.suffix == ".pt":
                verify_checkpoint(path)
        except (CLFirError, AssertionError):
            bad.add(path)
    return bad


@pytest.mark.parametrize("case, make_args, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_line(ctx, case, make_args, expected):
    args = make_args(ctx)
    damaged_before = _unreadable_results(ctx["tmp"])
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, res.output
    assert expected in errors[0], res.output
    assert "Traceback" not in res.output
    assert not list(ctx["tmp"].rglob(".*.tmp")), "a half-written file was left behind"
    assert _unreadable_results(ctx["tmp"]) <= damaged_before, "a result file was left unreadable"
    if case in AFTER:
        assert AFTER[case](ctx)


def test_debug_shows_the_traceback(ctx):
    res = runner.invoke(app, ["--debug", "run", "--scenario", "nope", "--output-dir", str(ctx["out"])])
    assert res.exit_code != 0 and isinstance(res.exception, Exception)


def test_a_failed_run_that_produced_nothing_does_not_block_a_rerun(ctx):
    args = ["run", "--strategy", "finetune", "--scenario", "fashionai-4inc", "--output-dir", str(ctx["out"]), *TINY]
    assert runner.invoke(app, args).exit_code == 2                       # no data root: fails before training
    res = runner.invoke(app, args + ["--data-root", str(ctx["data"])])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, args + ["--data-root", str(ctx["data"])])     # a complete run is kept
    assert res.exit_code == 2 and "already holds a run" in res.output


# -- damaged files that cl-fir recovers from -------------------------------------------------

def _warnings(output: str) -> list[str]:
    return [ln for ln in output.splitlines() if ln.startswith("warning:")]


def test_resume_continues_from_the_previous_checkpoint_when_the_latest_is_damaged(ctx, saved_runs):
    run = ctx["copy_run"]()
    _truncate(run / "checkpoints" / "increment_2.pt")
    res = runner.invoke(app, _resume(run))
    assert res.exit_code == 0, res.output
    warnings = _warnings(res.output)
    assert len(warnings) == 1 and "increment_2.pt is damaged: truncated" in warnings[0], res.output
    assert "continuing from increment_1.pt (end of increment 1)" in warnings[0]
    info = readback.read_json(run / "run.json")
    assert info["status"] == "complete"
    [fallback] = info["checkpoint_fallbacks"]
    assert fallback["resumed_from"] == "checkpoints/increment_1.pt"
    assert fallback["damaged"][0]["file"] == "checkpoints/increment_2.pt"
    assert (run / "checkpoints" / "increment_2.pt.damaged").is_file()      # kept aside for inspection
    assert (run / "matrix.csv").read_text() == (saved_runs["complete"] / "matrix.csv").read_text()


def test_compare_skips_and_lists_damaged_runs(ctx):
    good, bad = ctx["copy_run"]("complete", "good"), ctx["copy_run"]("complete", "bad")
    _truncate(bad / "cost.json")
    res = runner.invoke(app, ["compare", str(good), str(bad), "--out", str(ctx["tmp"] / "cmp")])
    assert res.exit_code == 0, res.output
    [warning] = _warnings(res.output)
    assert "skipped a damaged run" in warning and f"{bad}/cost.json: not valid JSON" in warning
    table = (ctx["tmp"] / "cmp" / "comparison.md").read_text()
    assert "| tiny | finetune | InfoNCE (tau 0.3), label-aware | 0 | MAP@all |" in table   # one seed-0 run, not two
    assert "Traceback" not in res.output


def test_sweep_lists_a_damaged_cell_and_resumes_one_whose_run_json_is_damaged(ctx, saved_runs):
    from cl_fir.sweep import plan

    out = ctx["tmp"] / "sweep"
    cells = out / "tiny" / "finetune"
    shutil.copytree(saved_runs["complete"], cells / "seed0")
    _truncate(cells / "seed0" / "matrix.csv", 0.7)
    shutil.copytree(saved_runs["stopped"], cells / "seed1")
    (cells / "seed1" / "run.json").write_bytes(b"")       # checkpoints intact: resumed, never overwritten
    actions = {c.seed: c.action for c in plan(["finetune"], [str(saved_runs["scenario"])], [0, 1], out).cells}
    assert actions == {0: "skip", 1: "resume"}
    res = runner.invoke(app, ["sweep", "--strategies", "finetune", "--scenarios", str(saved_runs["scenario"]),
                              "--seeds", "0", "--output-dir", str(out)])
    assert res.exit_code == 0, res.output
    [warning] = _warnings(res.output)
    assert "seed0/matrix.csv: truncated" in warning


@pytest.mark.parametrize("owner", ["gone", "pid reused", "damaged"])
def test_a_stale_lock_is_taken_over_and_said_so(ctx, owner):
    run = ctx["copy_run"]("complete")
    if owner == "damaged":
        (run / ".cl-fir.lock").write_bytes(b'{"pid": 12')
    else:
        _lock_of(ctx, run, alive=owner != "gone", **({"process_start": "1"} if owner == "pid reused" else {}))
    res = runner.invoke(app, _resume(run))
    assert res.exit_code == 2 and "the run is already complete" in res.output   # got past the lock
    [warning] = _warnings(res.output)
    reason = {"gone": "is no longer running", "pid reused": "now belongs to another process",
              "damaged": "the lock file was damaged"}[owner]
    assert "took over the stale lock" in warning and reason in warning, res.output
    assert not (run / ".cl-fir.lock").exists()                          # released on the way out


def test_damaged_caches_are_rebuilt_not_trusted(tmp_path):
    from cl_fir.data import cached_copy
    from cl_fir.data.image_check import check_images
    from cl_fir.data.synthfashion import SynthFashionConfig, ensure_synthfashion

    cfg = SynthFashionConfig(seed=3, image_size=32, train_per_attribute=10, queries_per_attribute=10,
                             candidates_per_attribute=10)
    root = ensure_synthfashion(cfg, tmp_path)
    before = {p: p.read_bytes() for p in root.rglob("*") if p.is_file()}
    image = sorted(root.rglob("*.png"))[0]
    _truncate(image)
    assert "bytes instead of" in cached_copy.problem(root)
    assert ensure_synthfashion(cfg, tmp_path) == root                   # generated again, identical
    assert {p: p.read_bytes() for p in root.rglob("*") if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    first = check_images([image], "decode", tmp_path / "cache")
    [cache_file] = (tmp_path / "cache" / "image-checks").iterdir()
    for damage in (b"", b"[1, 2]", b'{"version": 1, "signature": "', b'{"version": 1}'):
        cache_file.write_bytes(damage)
        again = check_images([image], "decode", tmp_path / "cache")
        assert not again.from_cache and again.bad == first.bad
