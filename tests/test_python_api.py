"""``cl_fir.run``: the library entry point trains like ``cl-fir run`` and leaves the caller's
signal handlers alone (only the command line installs its checkpoint-and-stop handlers)."""

from __future__ import annotations

import signal

import cl_fir
from cl_fir.report.run_dir import load_run


def test_run_trains_without_touching_signal_handlers(tiny_scenario, tmp_path, monkeypatch):
    installed = []
    real = signal.signal
    monkeypatch.setattr(signal, "signal", lambda sig, handler: installed.append(sig) or real(sig, handler))
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    path = cl_fir.run("finetune", str(tiny_scenario), seed=1, output_dir=tmp_path, overrides={"train.epochs": 1})
    assert installed == []
    assert {sig: signal.getsignal(sig) for sig in before} == before
    run = load_run(path)
    assert run.complete and run.matrix.shape == (2, 4)
