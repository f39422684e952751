"""Augmentation seeds follow a sample's position in the epoch, not the process that loads it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from cl_fir.cli import app
from cl_fir.runtime.distributed import DistributedContext
from cl_fir.engine.seeded_loader import SeededBatches, SeededItems


class _Batches:
    def __len__(self):
        return 3

    def __iter__(self):
        return iter([[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]])


class _Draws(torch.utils.data.Dataset):
    def __len__(self):
        return 12

    def __getitem__(self, i):
        return i, float(torch.rand(()))


def test_seeds_depend_on_position_only():
    whole = list(SeededBatches(_Batches(), 0, seed=5))
    assert [k for k, _ in whole[1]] == [4, 5, 6, 7]
    assert len({s for batch in whole for _, s in batch}) == 12               # every slot its own seed
    assert list(SeededBatches(_Batches(), 1, seed=5)) == whole[1:]           # resuming skips, same seeds
    assert list(SeededBatches(_Batches(), 0, seed=6)) != whole               # another epoch, other seeds
    ranks = [list(SeededBatches(_Batches(), 0, 5, DistributedContext(r, 2, r, "gloo").shard)) for r in range(2)]
    assert ranks[0][0] == [whole[0][0], whole[0][2]] and ranks[1][0] == [whole[0][1], whole[0][3]]


def test_seeded_items_draw_the_same_in_workers_and_leave_the_caller_random_state():
    def draws(workers):
        loader = torch.utils.data.DataLoader(SeededItems(_Draws()), batch_sampler=SeededBatches(_Batches(), 0, 5),
                                             num_workers=workers)
        return [v for _, values in loader for v in values.tolist()]

    in_process = draws(0)
    assert draws(2) == in_process
    items = SeededItems(_Draws())
    torch.manual_seed(0)
    assert [items[key] for batch in SeededBatches(_Batches(), 0, 5) for key in batch][0][1] == in_process[0]
    after = torch.rand(())
    torch.manual_seed(0)
    assert torch.rand(()) == after                                           # untouched by the items' draws


@pytest.mark.parametrize("strategy", ["finetune", "ewc"])      # ewc: its Fisher pass loads training data too
def test_results_do_not_depend_on_the_number_of_loader_workers(tiny_scenario, tmp_path, strategy):
    matrices = []
    for workers in (0, 2):
        out = tmp_path / f"w{workers}"
        res = CliRunner().invoke(app, ["run", "--strategy", strategy, "--scenario", str(tiny_scenario), "--quiet",
                                       "--num-workers", str(workers), "--output-dir", str(out)])
        assert res.exit_code == 0, res.output
        matrices.append(np.genfromtxt(out / "tiny" / strategy / "seed0" / "matrix.csv", delimiter=",",
                                      skip_header=1)[:, 1:])
    np.testing.assert_array_equal(matrices[0], matrices[1])


def test_mid_epoch_resume_with_loader_workers_gives_the_uninterrupted_results(tiny_scenario, tmp_path, monkeypatch):
    from cl_fir.engine.loop import TrainingLoop

    args = ["run", "--strategy", "finetune", "--scenario", str(tiny_scenario), "--quiet", "--num-workers", "2",
            "--set", "train.samples_per_epoch=64"]                             # 8 steps per increment
    runner = CliRunner()
    assert runner.invoke(app, [*args, "--output-dir", str(tmp_path / "whole")]).exit_code == 0
    original, steps = TrainingLoop.training_step, {"n": 0}

    def stop_at_step_11(self, batch):                                      # the 3rd step of increment 2
        steps["n"] += 1
        loss = original(self, batch)
        if steps["n"] == 11:
            self.request_stop("the test")
        return loss

    monkeypatch.setattr(TrainingLoop, "training_step", stop_at_step_11)
    cut = tmp_path / "cut" / "tiny" / "finetune" / "seed0"
    res = runner.invoke(app, [*args, "--output-dir", str(tmp_path / "cut")])
    assert res.exit_code == 130, res.output
    monkeypatch.undo()
    res = runner.invoke(app, ["run", "--resume", str(cut), "--quiet"])
    assert res.exit_code == 0, res.output
    whole = tmp_path / "whole" / "tiny" / "finetune" / "seed0"
    for name in ("matrix.csv", "metrics.csv"):
        assert (cut / name).read_text() == (whole / name).read_text()
