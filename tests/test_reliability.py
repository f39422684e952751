"""Interrupted runs: SIGTERM saves a checkpoint and stops; SIGKILL at random points never
leaves a partial result file, and resuming always ends with exactly the uninterrupted
run's results, even when the latest checkpoint is damaged after a kill. A second process
on a running run's folder is refused. Also checkpoint integrity checks, --resume with a
changed configuration, and --deterministic."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cl_fir.cli import app
from cl_fir.runner import execute_run, resolve_config

runner = CliRunner()
LONGER = {"train.samples_per_epoch": 64, "train.checkpoint_every": 1}   # 8 steps per increment
ARGS = ["--set", "train.samples_per_epoch=64", "--checkpoint-every", "1", "--deterministic", "--quiet"]


def _cli(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "cl_fir", *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, text=True)


def _wait_for(path: Path, proc: subprocess.Popen, timeout: float = 60, also=lambda: True) -> bool:
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        if path.exists() and also():
            return True
        time.sleep(0.02)
    return path.exists() and also()


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _assert_files_whole(run_dir: Path) -> None:
    """Every result file parses completely (a killed writer may leave only a hidden .tmp)."""
    for name in ("config.json", "run.json", "cost.json"):
        if (run_dir / name).exists():
            json.loads((run_dir / name).read_text())
    for csv in run_dir.glob("*.csv"):
        lines = csv.read_text().splitlines()
        assert lines and lines[-1], csv
        assert len({ln.count(",") for ln in lines}) == 1, csv


@pytest.fixture(scope="module")
def reference(tiny_scenario, tmp_path_factory):
    out = tmp_path_factory.mktemp("reference")
    cfg = resolve_config("mcl_fir", str(tiny_scenario), dict(LONGER), output_dir=str(out), deterministic=True)
    return execute_run(cfg)


def test_sigterm_saves_a_checkpoint_and_resume_finishes_identically(reference, tiny_scenario, tmp_path):
    proc = _cli("run", "--strategy", "mcl_fir", "--scenario", str(tiny_scenario), "--output-dir", str(tmp_path), *ARGS)
    run_dir = tmp_path / "tiny" / "mcl_fir" / "seed0"
    assert _wait_for(run_dir / "checkpoints" / "step.pt", proc)
    second = runner.invoke(app, ["run", "--resume", str(run_dir), "--quiet"])   # e.g. a sweep retried by hand
    if proc.poll() is None:
        assert second.exit_code == 2, second.output
        assert f"is in use by another cl-fir run (pid {proc.pid}" in second.output
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the run finished before the signal arrived")
    assert proc.returncode == 130, output
    assert "Traceback" not in output and "interrupted" in output
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "interrupted"
    res = runner.invoke(app, ["run", "--resume", str(run_dir), "--quiet"])
    assert res.exit_code == 0, res.output
    assert (run_dir / "matrix.csv").read_text() == (reference / "matrix.csv").read_text()
    assert (run_dir / "metrics.csv").read_text() == (reference / "metrics.csv").read_text()


def test_sigkill_at_random_points_then_resume_gives_the_same_results(reference, tiny_scenario, tmp_path):
    """Kills at random points; the second kill lands in increment 2 and the checkpoint it
    leaves behind (step.pt, the newest) is then truncated: the next resume reports it and
    goes back to increment 1's checkpoint. The results are still the uninterrupted run's."""
    rng = random.Random(20261122)
    run_dir = tmp_path / "tiny" / "mcl_fir" / "seed0"
    step, first = run_dir / "checkpoints" / "step.pt", run_dir / "checkpoints" / "increment_1.pt"
    start = ["run", "--strategy", "mcl_fir", "--scenario", str(tiny_scenario), "--output-dir", str(tmp_path), *ARGS]
    kills, damaged_at, outputs = 0, None, []
    for attempt in range(12):
        resumable = (run_dir / "run.json").exists()
        proc = _cli(*(["run", "--resume", str(run_dir), "--quiet"] if resumable else start + ["--overwrite"]))
        if kills == 1:      # in increment 2, then damage the checkpoint the kill leaves
            ready = _wait_for(step, proc, also=first.exists)
        else:               # after the damage: once this process has written a checkpoint of its own
            ready = kills < 4 and _wait_for(step, proc, also=lambda: damaged_at is None or _mtime(step) > damaged_at)
        if ready:
            time.sleep(rng.uniform(0.0, 0.1 if kills == 1 else 0.6))   # training, evaluation or a checkpoint write
            if proc.poll() is None:
                proc.kill()
                outputs.append(proc.communicate()[0])
                kills += 1
                _assert_files_whole(run_dir)
                if kills == 2 and step.exists() and first.exists():
                    step.write_bytes(step.read_bytes()[:1000])
                    damaged_at = step.stat().st_mtime_ns
                continue
        output, _ = proc.communicate(timeout=120)
        outputs.append(output)
        if proc.returncode == 0:
            break
        assert False, output
    assert kills >= 2, "the run always finished before it could be killed; make it longer"
    assert damaged_at is not None, "the second kill did not leave a mid-increment-2 checkpoint to damage"
    after = "\n".join(outputs[2:])
    assert "step.pt is damaged: truncated" in after and "continuing from increment_1.pt" in after, after
    assert "took over the stale lock" in after                       # every kill left its lock behind
    assert "Traceback" not in "\n".join(outputs)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "complete"
    assert info["checkpoint_fallbacks"][0]["damaged"][0]["file"] == "checkpoints/step.pt"
    assert (run_dir / "matrix.csv").read_text() == (reference / "matrix.csv").read_text()
    assert (run_dir / "metrics.csv").read_text() == (reference / "metrics.csv").read_text()
    assert not list(run_dir.rglob(".*.tmp")) and not (run_dir / ".cl-fir.lock").exists()


def test_resume_refuses_a_changed_configuration_unless_forced(tiny_scenario, tmp_path):
    cfg = resolve_config("finetune", str(tiny_scenario), output_dir=str(tmp_path))
    run_dir = execute_run(cfg, stop_after=1)
    res = runner.invoke(app, ["run", "--resume", str(run_dir), "--set", "train.lr=0.0005", "--quiet"])
    assert res.exit_code == 2 and "train.lr: 0.001 -> 0.0005" in res.output and "--force" in res.output
    saved = json.loads((run_dir / "config.json").read_text())
    saved["loss"]["temperature"] = 0.2           # an edit of config.json is a change too
    (run_dir / "config.json").write_text(json.dumps(saved))
    res = runner.invoke(app, ["run", "--resume", str(run_dir), "--quiet"])
    assert res.exit_code == 2 and "loss.temperature" in res.output
    res = runner.invoke(app, ["run", "--resume", str(run_dir), "--set", "train.lr=0.0005", "--force", "--quiet"])
    assert res.exit_code == 0, res.output
    info = json.loads((run_dir / "run.json").read_text())
    changed = {c["key"] for c in info["resumed_with_changes"][0]["changes"]}
    assert changed == {"train.lr", "loss.temperature"} and info["status"] == "complete"
    res = runner.invoke(app, ["run", "--resume", str(run_dir), "--seed", "3"])
    assert res.exit_code == 2 and "cannot be combined with --seed" in res.output


def test_deterministic_is_recorded_and_switched_on(tiny_scenario, tmp_path):
    import torch

    from cl_fir.runner import build_loop

    cfg = resolve_config("finetune", str(tiny_scenario), output_dir=str(tmp_path), deterministic=True)
    build_loop(cfg)
    assert torch.are_deterministic_algorithms_enabled()
    run_dir = execute_run(cfg)
    saved = json.loads((run_dir / "config.json").read_text())
    info = json.loads((run_dir / "run.json").read_text())
    assert saved["deterministic"] is True and saved["seed"] == 0
    assert {"torch", "numpy", "avalanche"} <= set(info["versions"]) and "name" in info["device"]
    build_loop(resolve_config("finetune", str(tiny_scenario)))
    assert not torch.are_deterministic_algorithms_enabled()


def test_non_finite_loss_stops_with_a_clear_message(tiny_scenario, tmp_path, nan_loss_at_step):
    nan_loss_at_step(3)
    res = runner.invoke(app, ["run", "--strategy", "finetune", "--scenario", str(tiny_scenario), "--output-dir",
                              str(tmp_path), "--checkpoint-every", "1", "--quiet"])
    assert res.exit_code == 2
    assert "non-finite loss (nan) at increment 2, epoch 1, step 1" in res.output
    assert "last good checkpoint" in res.output and "Traceback" not in res.output
    run_dir = tmp_path / "tiny" / "finetune" / "seed0"
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert (run_dir / "checkpoints" / "increment_1.pt").exists()


def test_checkpoint_damage_is_found_before_loading(tmp_path):
    import zipfile

    import torch

    from cl_fir.engine.checkpoint import DamagedCheckpoint, load_checkpoint, save_checkpoint

    path = tmp_path / "increment_1.pt"
    save_checkpoint(path, {"increment": 0, "w": torch.arange(4096.0)})
    good = path.read_bytes()
    with zipfile.ZipFile(path) as archive:
        record = max(archive.infolist(), key=lambda r: r.file_size)
    flipped = bytearray(good)
    flipped[record.header_offset + 100 + record.file_size // 2] ^= 0x01
    damage = {b"": "empty file (0 bytes)", good[: len(good) // 2]: "truncated",
              good[:-1]: "truncated", bytes(flipped): "fails its CRC32 check", b"<html>": "not a torch checkpoint"}
    for data, problem in damage.items():
        path.write_bytes(data)
        with pytest.raises(DamagedCheckpoint, match=re.escape(problem)):
            load_checkpoint(path)
    path.write_bytes(good)
    assert torch.equal(load_checkpoint(path)["w"], torch.arange(4096.0))
    torch.save({"increment": 2}, path)                  # written by an older cl-fir: a plain torch file
    assert load_checkpoint(path)["increment"] == 2


def test_the_run_lock_is_held_once_and_released(tmp_path):
    from cl_fir.errors import ConfigError
    from cl_fir.report.run_lock import LOCK_NAME, RunLock

    lock = RunLock.acquire(tmp_path)
    owner = json.loads((tmp_path / LOCK_NAME).read_text())
    assert owner["pid"] == os.getpid() and owner["host"]
    with pytest.raises(ConfigError, match=f"in use by another cl-fir run \\(pid {os.getpid()}"):
        RunLock.acquire(tmp_path)
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    RunLock.acquire(tmp_path).release()
