"""Bad input, table-driven: every case exits non-zero with one `error:` line that names the
place and what was expected, shows no traceback, and leaves no half-written file."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cl_fir.cli import app
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


@pytest.fixture
def ctx(pristine, tmp_path, tiny_scenario, monkeypatch):
    monkeypatch.delenv("CL_FIR_DATA", raising=False)
    data = tmp_path / "data"
    shutil.copytree(pristine, data)
    out = tmp_path / "out"
    return {"data": data, "out": out, "tmp": tmp_path, "tiny": str(tiny_scenario)}


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
]


@pytest.mark.parametrize("case, make_args, expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gives_one_clear_line(ctx, case, make_args, expected):
    res = runner.invoke(app, make_args(ctx))
    assert res.exit_code not in (0, None), res.output
    errors = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, res.output
    assert expected in errors[0], res.output
    assert "Traceback" not in res.output
    assert not list(ctx["tmp"].rglob(".*.tmp")), "a half-written file was left behind"
    for path in ctx["out"].rglob("*.json") if ctx["out"].exists() else []:
        json.loads(path.read_text())


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
