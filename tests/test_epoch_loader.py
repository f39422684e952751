"""The epoch loader keeps its worker processes across the epochs of one dataset, serves
each epoch's own batches, and changes no result."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from typer.testing import CliRunner

from cl_fir.cli import app
from cl_fir.engine.epoch_loader import EpochLoader


class _Pids(torch.utils.data.Dataset):
    def __len__(self):
        return 16

    def __getitem__(self, i):
        return i, os.getpid()


def _make(dataset, batches, persistent):
    return DataLoader(dataset, batch_sampler=batches, num_workers=2, persistent_workers=persistent)


def _epoch(loader):
    keys, pids = zip(*[(k.tolist(), p.tolist()) for k, p in loader])
    return [k for batch in keys for k in batch], {p for batch in pids for p in batch}


@pytest.mark.parametrize("persistent", [True, False])
def test_workers_serve_every_epoch_of_one_dataset_with_that_epochs_batches(persistent):
    loaders = EpochLoader(_make, persistent)
    dataset = _Pids()
    first, pids_1 = _epoch(loaders.for_epoch(dataset, [[0, 1], [2, 3]]))
    second, pids_2 = _epoch(loaders.for_epoch(dataset, [[5, 4], [7, 6], [9, 8]]))
    assert first == [0, 1, 2, 3] and second == [5, 4, 7, 6, 9, 8]
    assert len(pids_1) == 2 and os.getpid() not in pids_1
    assert (pids_1 == pids_2) is persistent                 # the same two worker processes, or new ones
    assert loaders.built == (1 if persistent else 2)
    third, _ = _epoch(loaders.for_epoch(_Pids(), [[1, 0]]))  # another dataset object: a new loader
    assert third == [1, 0] and loaders.built == (2 if persistent else 3)
    loaders.close()


def test_an_epoch_cut_short_leaves_the_next_one_whole():
    loaders = EpochLoader(_make, True)
    dataset = _Pids()
    it = iter(loaders.for_epoch(dataset, [[0, 1], [2, 3], [4, 5], [6, 7]]))
    next(it)                                                 # stopped after one batch; prefetched ones pending
    assert _epoch(loaders.for_epoch(dataset, [[8, 9], [10, 11]]))[0] == [8, 9, 10, 11]
    loaders.close()


def test_persistent_workers_change_no_result_and_start_once_per_increment(tiny_scenario, tmp_path, monkeypatch):
    built = []
    close = EpochLoader.close

    def record(self):
        if self._loader is not None or not self.persistent:
            built.append((self.persistent, self.built))
        close(self)

    monkeypatch.setattr(EpochLoader, "close", record)
    matrices = []
    for persistent in ("true", "false"):
        out = tmp_path / persistent
        res = CliRunner().invoke(app, ["run", "--strategy", "finetune", "--scenario", str(tiny_scenario), "--quiet",
                                       "--num-workers", "2", "--set", "train.epochs=3",
                                       "--set", f"train.persistent_workers={persistent}", "--output-dir", str(out)])
        assert res.exit_code == 0, res.output
        matrices.append((out / "tiny" / "finetune" / "seed0" / "matrix.csv").read_text())
    assert matrices[0] == matrices[1]
    # two increments of three epochs: one loader each, or one per epoch
    assert built == [(True, 1), (True, 1), (False, 3), (False, 3)]
    assert np.isfinite(np.genfromtxt(out / "tiny" / "finetune" / "seed0" / "matrix.csv", delimiter=",",
                                     skip_header=1)[:, 1:][-1]).all()
