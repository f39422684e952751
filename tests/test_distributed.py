"""Data-parallel training with 2 CPU processes (gloo): gradients equal to one process's on
the same batch, and a torchrun run whose ranks stay identical and match a single-process run."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from cl_fir.runtime.distributed import DistributedContext
from cl_fir.losses import doublet_infonce


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model_and_batch():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 4))
    x = torch.randn(16, 6)                    # 8 doublets: [a_1..a_8, p_1..p_8]
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3] * 2)
    return model, x, labels


def _loss(emb_full, labels_full, emb_local):
    B = emb_full.shape[0] // 2
    # full-batch InfoNCE (in-batch negatives from every rank) + a per-sample mean term
    return doublet_infonce(emb_full[:B], emb_full[B:], labels_full[:B], 0.2) + emb_local.pow(2).mean()


def _on_rank(rank: int, check, world: int, port: int, out: str):
    """Process ``rank`` of ``world`` (gloo): runs ``check(ctx)``, then leaves ok<rank> in ``out``."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        check(DistributedContext(rank, world, rank, "gloo"))
        Path(out, f"ok{rank}").write_text("ok")
    finally:
        dist.destroy_process_group()


def _on_two_ranks(check, tmp_path) -> None:
    mp.spawn(_on_rank, args=(check, 2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    assert (tmp_path / "ok0").exists() and (tmp_path / "ok1").exists()


def _gathered_loss_gradient(ctx: DistributedContext):
    model, x, labels = _model_and_batch()
    # reference: one process, the whole batch
    emb = F.normalize(model(x), dim=1)
    _loss(emb, labels, emb).backward()
    reference = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    # this rank's share, gathered for the loss, gradients averaged
    idx = ctx.shard(list(range(16)))
    local = F.normalize(model(x[idx]), dim=1)
    full = ctx.gather_pairs(local)
    torch.testing.assert_close(full, F.normalize(model(x), dim=1))     # same rows, same order
    _loss(full, ctx.gather_pairs(labels[idx]), local).backward()
    ctx.average_gradients(model.parameters())
    for got, want in zip((p.grad for p in model.parameters()), reference):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    ctx.check_in_sync(model, "in the test")


def test_sharded_batch_with_gathered_loss_gives_the_single_process_gradient(tmp_path):
    _on_two_ranks(_gathered_loss_gradient, tmp_path)


def _bn_model():
    torch.manual_seed(0)
    from timm.layers import BatchNormAct2d

    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 5, 3, padding=1), BatchNormAct2d(5, momentum=None),
        torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(5, 6), torch.nn.BatchNorm1d(6))


def _synced_bn_equals_whole_batch(ctx: DistributedContext):
    import copy

    from cl_fir.engine.synced_batchnorm import sync_batchnorm

    model = _bn_model().double()
    synced = copy.deepcopy(model)
    assert sync_batchnorm(synced) == 3
    torch.manual_seed(1)
    x = torch.randn(16, 3, 5, 5, dtype=torch.float64) * 3 + 2     # 8 doublets
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 3, 3] * 2)
    for _ in range(2):                                             # two steps: running statistics accumulate
        emb = F.normalize(model(x), dim=1)
        _loss(emb, labels, emb).backward()
        idx = ctx.shard(list(range(16)))
        local = F.normalize(synced(x[idx]), dim=1)
        full = ctx.gather_pairs(local)
        torch.testing.assert_close(full, emb.detach())             # whole-batch normalisation
        _loss(full, ctx.gather_pairs(labels[idx]), local).backward()
        ctx.average_gradients(synced.parameters())
        for (name, got), want in zip(synced.named_parameters(), model.parameters()):
            torch.testing.assert_close(got.grad, want.grad, rtol=1e-7, atol=1e-9, msg=name)
        for p in (*model.parameters(), *synced.parameters()):
            p.grad = None
    for (name, got), want in zip(synced.named_buffers(), model.buffers()):
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-9, msg=name)
    synced.eval(), model.eval()
    torch.testing.assert_close(synced(x), model(x))


def test_synced_batchnorm_over_two_processes_equals_one_process_on_the_whole_batch(tmp_path):
    _on_two_ranks(_synced_bn_equals_whole_batch, tmp_path)


def test_sync_batchnorm_keeps_one_process_and_checkpoints_unchanged():
    import copy

    from cl_fir.engine.synced_batchnorm import sync_batchnorm
    from cl_fir.errors import ConfigError

    model = _bn_model()
    synced = copy.deepcopy(model)
    sync_batchnorm(synced)
    assert sync_batchnorm(synced) == 0                                 # already converted
    assert list(synced.state_dict()) == list(model.state_dict())
    x = torch.randn(4, 3, 5, 5)
    torch.testing.assert_close(synced(x), model(x))                    # no process group: plain BatchNorm
    assert torch.equal(synced[1].running_mean, model[1].running_mean)

    class OwnNorm(torch.nn.BatchNorm2d):
        pass

    with pytest.raises(ConfigError, match=r"train.sync_batchnorm: .*1 \(.*OwnNorm\)"):
        sync_batchnorm(torch.nn.Sequential(torch.nn.Conv2d(3, 3, 1), OwnNorm(3)))


def test_shard_needs_a_batch_that_splits():
    from cl_fir.errors import ConfigError

    ctx = DistributedContext(1, 2, 1, "gloo")
    assert ctx.shard(list(range(8))) == [2, 3, 6, 7]
    with pytest.raises(ConfigError, match="train.batch_size: 3 doublets do not split over 2 processes"):
        ctx.shard(list(range(6)))


def _run_cl_fir(args: list[str], out: Path, processes: int = 1) -> subprocess.CompletedProcess:
    """``cl-fir <args> --output-dir out`` in one process, or under torchrun with ``processes``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable] if processes == 1 else [
        str(Path(sys.executable).with_name("torchrun")), "--nproc-per-node", str(processes),
        "--master-port", str(_free_port())]
    done = subprocess.run([*launcher, "-m", "cl_fir", *args, "--output-dir", str(out)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _matrix(run_dir: Path) -> np.ndarray:
    return np.genfromtxt(run_dir / "matrix.csv", delimiter=",", skip_header=1)[:, 1:]


def test_torchrun_two_processes_match_one(tiny_scenario, tmp_path):
    """Flips are seeded by a sample's position, whichever rank loads it, so the only
    difference between one process and two is BatchNorm's statistics: with
    ``train.sync_batchnorm`` the matrices are equal up to float summation order.

    The strategy is ewc (one shared model, as finetune, plus its Fisher pass): its Fisher
    batches are sharded like training batches and each sample's gradient averaged, so each rank
    forwards half of every Fisher batch (counted once in the cost) and both ranks square the
    gradient of every sample of the whole batch, the Fisher one process estimates."""
    args = ["run", "--strategy", "ewc", "--scenario", str(tiny_scenario), "--seed", "1", "--quiet",
            "--set", "train.samples_per_epoch=32", "--opt", "fisher_batches=2"]
    _run_cl_fir(args, tmp_path / "one")
    for name, extra in (("two", []), ("two_synced", ["--set", "train.sync_batchnorm=true"])):
        two = _run_cl_fir([*args, *extra], tmp_path / name, processes=2)
        assert two.stdout.count("| tiny | ewc |") == 1                       # rank 0 alone reports
    runs = [tmp_path / d / "tiny" / "ewc" / "seed1" for d in ("one", "two", "two_synced")]
    info = json.loads((runs[1] / "run.json").read_text())
    assert info["status"] == "complete" and info["distributed"] == {"world_size": 2, "backend": "gloo"}
    assert "sync_batchnorm_layers" not in info
    assert json.loads((runs[2] / "run.json").read_text())["sync_batchnorm_layers"] > 1    # backbone and head
    counts = ("images_forwarded", "optimizer_steps")
    a, b = (json.loads((r / "cost.json").read_text())["increments"] for r in runs[:2])
    assert [[c[k] for k in counts] for c in a] == [[c[k] for k in counts] for c in b]
    m1, m2, m3 = (_matrix(r) for r in runs)
    # per-rank BatchNorm normalises each rank's half batch: close, not equal
    assert np.nanmax(np.abs(m1 - m2)) < 10.0 and abs(np.nanmean(m1) - np.nanmean(m2)) < 3.0
    # whole-batch statistics: the single-process run, up to float summation order (which can
    # swap a near-tie in a ranking after training)
    np.testing.assert_allclose(m3, m1, atol=0.25)
    assert abs(np.nanmean(m3) - np.nanmean(m1)) < 0.05
    fishers = [torch.load(r / "checkpoints" / "increment_2.pt", weights_only=False)["loop"]["strategy"]["fishers"][0]
               for r in (runs[0], runs[2])]
    assert fishers[0].keys() == fishers[1].keys()
    for name, f in fishers[0].items():      # measured: within 6e-6 of the largest entry
        torch.testing.assert_close(fishers[1][name], f, rtol=1e-3, atol=1e-9 + 1e-3 * f.abs().max().item())


@pytest.mark.slow   # 20 s each; `make test` keeps the core two-process equality test
def test_torchrun_runs_the_composed_family_with_distillation(tmp_path, cache_dir):
    """lwf on composed triplets under torchrun: shards of triplets, gathered queries and
    targets, distillation on each rank's own rows. Its per-increment compositor heads keep
    per-rank BatchNorm statistics, so the matrix is close to one process's, not equal."""
    from test_composed_family import TINY_CIR

    scenario = tmp_path / "tiny-cir.toml"
    scenario.write_text(TINY_CIR.replace("{gallery}", "split").replace("{groups}", "3"))
    args = ["run", "--strategy", "lwf", "--scenario", str(scenario), "--quiet", "--set", "train.sync_batchnorm=true"]
    _run_cl_fir(args, tmp_path / "one")
    two = _run_cl_fir(args, tmp_path / "two", processes=2)
    assert two.stdout.count("| tiny-cir | lwf |") == 1
    m1, m2 = (_matrix(tmp_path / d / "tiny-cir" / "lwf" / "seed0") for d in ("one", "two"))
    # Recall@10 over 8 queries per category: a query is 12.5 points
    assert np.nanmax(np.abs(m2 - m1)) <= 25.0 and abs(np.nanmean(m2) - np.nanmean(m1)) < 7.5


def test_per_sample_draws_are_the_whole_batch_rows_of_this_rank():
    ctx = DistributedContext(1, 2, 1, "gloo")
    assert ctx.local_rows(4, paired=True).tolist() == [2, 3, 6, 7]            # as shard() splits doublets
    assert ctx.local_rows(3, paired=False).tolist() == [3, 4, 5]              # as shard_triplets() splits
    assert ctx.shard(list(range(8))) == [2, 3, 6, 7] and ctx.shard_triplets(list(range(6))) == [3, 4, 5]


def test_sync_batchnorm_leaves_routed_heads_alone():
    from cl_fir.engine.synced_batchnorm import RankSyncedStatistics, sync_batchnorm

    class TwoHeads(torch.nn.Module):
        def __init__(self, heads: int):
            super().__init__()
            self.backbone = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 1), torch.nn.BatchNorm2d(4))
            self.heads = torch.nn.ModuleList(torch.nn.BatchNorm2d(4) for _ in range(heads))

    routed, single = TwoHeads(2), TwoHeads(1)
    assert sync_batchnorm(routed) == 1 and sync_batchnorm(single) == 2
    assert isinstance(routed.backbone[1], RankSyncedStatistics)
    assert not any(isinstance(h, RankSyncedStatistics) for h in routed.heads)
    assert isinstance(single.heads[0], RankSyncedStatistics)


@pytest.mark.slow   # 20 s each; `make test` keeps the core two-process equality test
def test_torchrun_runs_asenpp_with_each_branch_loss_over_the_whole_batch(tiny_scenario, tmp_path):
    """ASEN++ under torchrun: each branch's embeddings are gathered for its loss, and the
    local backbone runs once per batch on every rank, so its BatchNorm is synchronised like
    the main backbone's. mcl_fir routes samples to per-increment heads (per-rank statistics
    there), so the matrix is close to one process's, not equal."""
    args = ["run", "--strategy", "mcl_fir", "--scenario", str(tiny_scenario), "--seed", "1", "--quiet",
            "--set", "train.samples_per_epoch=32", "--set", "train.sync_batchnorm=true",
            "--set", "model.arch=asenpp", "--set", "model.local_backbone=test_resnet", "--set", "model.local_size=16"]
    _run_cl_fir(args, tmp_path / "one")
    _run_cl_fir(args, tmp_path / "two", processes=2)
    runs = [tmp_path / d / "tiny" / "mcl_fir" / "seed1" for d in ("one", "two")]
    info = json.loads((runs[1] / "run.json").read_text())
    assert info["status"] == "complete" and info["distributed"]["world_size"] == 2
    m1, m2 = (_matrix(r) for r in runs)
    assert np.isfinite(m2[~np.isnan(m1)]).all()
    assert np.nanmax(np.abs(m1 - m2)) < 10.0 and abs(np.nanmean(m1) - np.nanmean(m2)) < 3.0


@pytest.mark.slow   # 20 s each; `make test` keeps the core two-process equality test
def test_torchrun_runs_modc_through_every_stage(tmp_path, cache_dir):
    """modc under torchrun: batches mixing doublets and view pairs are sharded like any
    doublet batch; the loss, the pseudo-labels and the centroid updates see the gathered
    whole batch, and so does the old-attribute term (each rank embeds its own anchors)."""
    from test_label_fraction import _lf_scenario

    _, child = _lf_scenario(tmp_path, "0.25")
    args = ["run", "--strategy", "modc", "--scenario", str(child), "--seed", "1", "--quiet",
            "--set", "train.epochs=6", "--set", "train.samples_per_epoch=16", "--set", "train.sync_batchnorm=true",
            "--opt", "warmup_epochs=1", "--opt", "supervised_epochs=1", "--opt", "step_epochs=1",
            "--opt", "confidence=0.0"]
    _run_cl_fir(args, tmp_path / "one")
    two = _run_cl_fir(args, tmp_path / "two", processes=2)
    assert two.stdout.count("| tiny-lf | modc |") == 1
    m1, m2 = (_matrix(tmp_path / d / "tiny-lf" / "modc" / "seed1") for d in ("one", "two"))
    # one head: every BatchNorm is synchronised, so the ranks compute what one process does
    np.testing.assert_allclose(m2, m1, atol=0.5)


class _Rows(torch.utils.data.Dataset):
    def __init__(self, n: int):
        self.x = torch.randn(n, 3, generator=torch.Generator().manual_seed(n))

    def __len__(self):
        return len(self.x)

    def __getitem__(self, i):
        return self.x[i], i


def _sharded_embedding(ctx: DistributedContext):
    from cl_fir.runtime.device import resolve_device
    from cl_fir.evaluation.evaluator import embed_batches

    setup = resolve_device("cpu", "fp32")
    for n in (7, 1):                                    # uneven shares; fewer rows than ranks
        data, seen = _Rows(n), []

        def forward(x, ids):
            seen.extend(ids.tolist())
            return x * 2.0 + ids[:, None]

        whole = embed_batches(data, forward, setup, batch_size=2, num_workers=0, dist=ctx)
        torch.testing.assert_close(whole, data.x * 2.0 + torch.arange(n)[:, None], rtol=0, atol=0)
        assert seen == (list(ctx.shard_rows(n)) if n >= 2 else [0])    # each rank embedded its share only


def test_evaluation_embeds_a_share_on_each_rank_and_gathers_the_whole_set(tmp_path):
    _on_two_ranks(_sharded_embedding, tmp_path)
    assert [list(DistributedContext(r, 2, r, "gloo").shard_rows(7)) for r in (0, 1)] == [[0, 1, 2], [3, 4, 5, 6]]


def _stop_agreement(ctx: DistributedContext):
    from cl_fir.engine.stop import StopAgreement

    stop = StopAgreement(ctx)
    if ctx.rank == 1:
        stop.request("SIGTERM")
    assert stop.agreed(poll=False) is None          # between polls nobody acts on it
    agreed = stop.agreed(poll=True)                 # a poll: every rank learns of it
    assert agreed == ("SIGTERM" if ctx.rank == 1 else "a signal on another process")
    assert stop.agreed(poll=False) == agreed


def test_ranks_agree_on_a_stop_request_at_a_poll(tmp_path):
    _on_two_ranks(_stop_agreement, tmp_path)
