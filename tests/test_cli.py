"""The command line: listing, and one clear line (no traceback) for bad input."""

from __future__ import annotations

import subprocess
import sys

import pytest
from typer.testing import CliRunner

from cl_fir.cli import app

runner = CliRunner()


def test_list_shows_strategies_and_scenarios():
    res = runner.invoke(app, ["list"])
    assert res.exit_code == 0
    for name in ("finetune", "static", "synth-4inc", "synth-2inc"):
        assert name in res.output


@pytest.mark.parametrize("args, message", [
    (["run", "--strategy", "nope"], "unknown strategy 'nope'; available: ewc, finetune, joint, lwf, mcl_fir"),
    (["run", "--scenario", "nope"], "unknown scenario 'nope'; available:"),
    (["run", "--epochs", "-1"], "train.epochs (--epochs): expected an integer >= 1, got -1"),
    (["run", "--set", "train.bogus=1"], "unknown key 'bogus'"),
    (["run", "--opt", "nope=1"], "unknown key 'nope'"),
    (["run", "--device", "cuda:0"], "CUDA is not available"),
    (["list", "things"], "expected strategies, scenarios or all"),
    (["compare"], "nothing to compare"),
])
def test_bad_input_gives_one_clear_line(args, message, tmp_path):
    res = runner.invoke(app, args + (["--output-dir", str(tmp_path)] if args[0] == "run" else []))
    assert res.exit_code == 2
    assert message in res.output
    assert "Traceback" not in res.output


def test_unwritable_output_dir(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = runner.invoke(app, ["run", "--output-dir", str(blocker / "sub"), "--quiet"])
    assert res.exit_code == 2 and "cannot write" in res.output


def test_console_entry_point_exit_code_and_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "cl_fir", "run", "--strategy", "nope"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "error: unknown strategy 'nope'" in proc.stderr and "Traceback" not in proc.stderr
    debug = subprocess.run([sys.executable, "-m", "cl_fir", "--debug", "run", "--strategy", "nope"],
                           capture_output=True, text=True, timeout=120)
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_error_text_with_brackets_is_printed_verbatim(tmp_path):
    from conftest import write_scenario

    path = write_scenario(tmp_path, '[["skirt_length"]]', **{"epochs = 1": "epoch = 1"})
    res = runner.invoke(app, ["run", "--scenario", str(path), "--output-dir", str(tmp_path)])
    assert res.exit_code == 2
    assert f"{path} [train]: unknown key 'epoch'" in res.output
