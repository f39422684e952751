"""MODC: each loss and the centroid bank against slow explicit versions; the stage machine;
a semi-supervised run through every stage that resumes exactly after a crash."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from test_label_fraction import _lf_scenario

from cl_fir.data.samplers import ViewPairSampler
from cl_fir.strategies.modc.clustering import STAGES, CentroidBank, StageSchedule, cluster_loss, modc_stage, simsiam_loss
from cl_fir.runner import execute_run, resolve_config, resume_run

OFFSETS, VALUES = [0, 3, 7], [3, 4, 2]       # 3 attributes with 3, 4 and 2 values: classes 0-8


def _bank(seed=0, dim=5):
    g = torch.Generator().manual_seed(seed)
    bank = CentroidBank(OFFSETS, VALUES, dim)
    for a, k in enumerate(VALUES):
        valid = torch.ones(k, dtype=torch.bool)
        if a == 1:
            valid[2] = False                       # a value with no labelled image
        bank.set_attribute(a, torch.randn(k, dim, generator=g), valid)
    return bank


def _attr_of(c):
    return max(a for a, o in enumerate(OFFSETS) if c >= o)


def test_cluster_loss_matches_an_explicit_softmax_over_each_attributes_centroids():
    bank, tau = _bank(), 0.1
    g = torch.Generator().manual_seed(1)
    z = F.normalize(torch.randn(7, 5, generator=g), dim=1).requires_grad_(True)
    classes = torch.tensor([0, 2, 3, 4, 6, 7, 8])
    attrs = torch.tensor([_attr_of(c) for c in classes.tolist()])
    total = 0.0
    for i in range(7):
        a = int(attrs[i])
        members = [c for c in range(9) if _attr_of(c) == a and bool(bank.valid[c])]
        logits = [float(z[i].detach() @ bank.centroids[c]) / tau for c in members]
        total += -(logits[members.index(int(classes[i]))] - math.log(sum(math.exp(v) for v in logits)))
    loss = cluster_loss(z, classes, attrs, bank, tau)
    assert loss.item() == pytest.approx(total / 7, rel=1e-5)
    loss.backward()
    assert z.grad is not None and not bank.centroids.requires_grad     # centroids take no gradient


def test_cluster_loss_over_selected_rows_equals_the_loss_of_those_rows_alone():
    bank, tau = _bank(), 0.1
    z = F.normalize(torch.randn(7, 5, generator=torch.Generator().manual_seed(2)), dim=1).requires_grad_(True)
    classes = torch.tensor([0, -1, 3, 4, -1, 7, 8])                  # rows left out may have no class
    attrs = torch.tensor([0, 1, 1, 1, 2, 2, 2])
    rows = classes >= 0
    got = cluster_loss(z, classes, attrs, bank, tau, rows=rows)
    alone = z.detach()[rows].clone().requires_grad_(True)
    want = cluster_loss(alone, classes[rows], attrs[rows], bank, tau)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    got.backward()
    want.backward()
    torch.testing.assert_close(z.grad[rows], alone.grad)
    assert not z.grad[~rows].any()
    none = cluster_loss(z, classes, attrs, bank, tau, rows=torch.zeros(7, dtype=torch.bool))
    assert none.item() == 0.0


def test_pseudo_labels_are_the_nearest_valid_centroid_of_the_attribute_with_softmax_confidence():
    bank, tau = _bank(2), 0.5
    z = F.normalize(torch.randn(20, 5, generator=torch.Generator().manual_seed(3)), dim=1)
    attrs = torch.arange(20) % 3
    classes, conf = bank.pseudo_labels(z, attrs, tau)
    for i in range(20):
        a = int(attrs[i])
        members = [c for c in range(9) if _attr_of(c) == a and bool(bank.valid[c])]
        sims = {c: float(z[i] @ bank.centroids[c]) for c in members}
        best = max(sims, key=sims.get)
        assert int(classes[i]) == best and best != 5                   # class 5 (attribute 1, value 2) is invalid
        expected = math.exp(sims[best] / tau) / sum(math.exp(s / tau) for s in sims.values())
        assert conf[i].item() == pytest.approx(expected, rel=1e-5)


def test_centroid_ema_updates_present_unfrozen_classes_only():
    bank, m = _bank(4), 0.9
    bank.freeze([2])
    bank.valid[5] = False
    before = bank.centroids.clone()
    z = torch.randn(7, 5, generator=torch.Generator().manual_seed(5))
    classes = torch.tensor([0, 0, 5, 7, 8, 0, -1])                   # -1: a row left out
    bank.update(z, classes, m)
    expected = before.clone()
    expected[0] = F.normalize(m * before[0] + (1 - m) * z[[0, 1, 5]].mean(0), dim=0)
    expected[5] = F.normalize(z[2], dim=0)        # a class without a centroid starts at its batch mean
    assert torch.allclose(bank.centroids, expected, atol=1e-6)        # 7 and 8 are frozen (attribute 2)
    assert bool(bank.valid[5])


def test_simsiam_loss_matches_its_definition_and_stops_gradient_on_targets():
    g = torch.Generator().manual_seed(6)
    p1, p2, z1, z2 = (torch.randn(4, 3, generator=g).requires_grad_(True) for _ in range(4))
    loss = simsiam_loss(p1, p2, z1, z2)
    explicit = 0.0
    for i in range(4):
        explicit += 0.5 * (1 - float(F.cosine_similarity(p1[i].detach(), z2[i].detach(), dim=0)))
        explicit += 0.5 * (1 - float(F.cosine_similarity(p2[i].detach(), z1[i].detach(), dim=0)))
    assert loss.item() == pytest.approx(explicit / 4, rel=1e-5)
    loss.backward()
    assert z1.grad is None and z2.grad is None and p1.grad is not None


def test_stage_machine_goes_through_the_stages_in_order():
    stages = [modc_stage(e, 2, 1, 2) for e in range(12)]
    assert stages == [0, 0, 1, 2, 2, 3, 3, 4, 4, 5, 5, 5]
    assert [STAGES[s] for s in sorted(set(stages))] == list(STAGES)
    assert modc_stage(0, 0, 0, 1) == 2


def test_a_schedule_longer_than_the_increment_shares_its_steps_among_the_stages():
    fitted = StageSchedule(epochs=2, steps_per_epoch=32, warmup_epochs=1, supervised_epochs=1, step_epochs=1)
    assert not fitted.by_epoch and fitted.needed == 6
    assert fitted.steps_per_stage() == [10, 11, 11, 10, 11, 11]          # synth-4inc: 64 steps, 6 stages
    assert fitted.segments(0) == [(0, 10), (1, 11), (2, 11)] and fitted.segments(1) == [(3, 10), (4, 11), (5, 11)]
    assert [fitted.stage(1, s) for s in (0, 9, 10, 20, 21, 31)] == [3, 3, 4, 4, 5, 5]
    no_warmup = StageSchedule(1, 10, 0, 1, 1)
    assert no_warmup.steps_per_stage() == [0, 2, 2, 2, 2, 2]
    whole = StageSchedule(epochs=12, steps_per_epoch=3, warmup_epochs=2, supervised_epochs=1, step_epochs=2)
    assert whole.by_epoch
    assert [whole.stage(e, 1) for e in range(12)] == [modc_stage(e, 2, 1, 2) for e in range(12)]
    assert whole.segments(4) == [(modc_stage(4, 2, 1, 2), 3)]


def test_view_pairs_list_each_image_twice():
    batches = list(ViewPairSampler(np.array([10, 11, 12]), 4, 3, seed=0))
    assert len(batches) == 3 and all(b[:4] == b[4:] and set(b) <= {10, 11, 12} for b in batches)


class _Crash(RuntimeError):
    pass


OPTS = {"strategy_options": {"warmup_epochs": 1, "supervised_epochs": 1, "step_epochs": 1, "confidence": 0.0}}
LF = {"train.epochs": 6, "train.samples_per_epoch": 16, "train.checkpoint_every": 1, "eval.mode": "prioritized",
      "eval.query_labels": "pseudo"}


def test_semi_supervised_run_uses_unlabelled_images_and_resumes_exactly(tmp_path, cache_dir, monkeypatch):
    from cl_fir.runtime.host_syncs import HostSyncCounter
    from cl_fir.engine.loop import TrainingLoop

    _, child = _lf_scenario(tmp_path, "0.25")
    seen = {"unlabelled": 0, "stages": set(), "reads": set()}
    original_criterion = __import__("cl_fir.strategies.modc", fromlist=["MODC"]).MODC.criterion
    original = TrainingLoop.training_step

    def spy(self, ctx):
        seen["unlabelled"] = seen["unlabelled"] + (ctx.batch.labels < 0).sum()     # no host read in the step
        seen["stages"].add(self.stage(ctx))
        return original_criterion(self, ctx)

    def counted_step(self, batch):
        with HostSyncCounter() as syncs:
            loss = original(self, batch)
        seen["reads"].add(tuple(sorted((op, where.split(":")[0], n) for (op, where), n in syncs.sites.items())))
        return loss

    monkeypatch.setattr("cl_fir.strategies.modc.MODC.criterion", spy)
    monkeypatch.setattr(TrainingLoop, "training_step", counted_step)
    full = execute_run(resolve_config("modc", str(child), dict(LF), output_dir=str(tmp_path / "full"), seed=1,
                                      **OPTS))
    assert seen["stages"] == set(range(len(STAGES))) and int(seen["unlabelled"]) > 0
    # every stage's step (pseudo-labels, masks of known and confident rows, centroid EMA, old
    # attributes) waits for the GPU only to read the loss (before: up to 43 reads a step)
    assert seen["reads"] == {(("__float__", "engine/loss_readback.py", 1),)}
    info = json.loads((full / "run.json").read_text())
    assert info["unlabelled_used"] is True
    assert (full / "matrix_prio_pseudo_top1_map_all.csv").is_file()

    calls = {"n": 0}

    def crashing_step(self, batch):    # 12 steps per increment: crash in increment 2, semi-supervised step 2
        calls["n"] += 1
        if calls["n"] == 12 + 8:
            raise _Crash("simulated crash")
        return original(self, batch)

    monkeypatch.setattr(TrainingLoop, "training_step", crashing_step)
    with pytest.raises(_Crash):
        execute_run(resolve_config("modc", str(child), dict(LF), output_dir=str(tmp_path / "crash"), seed=1, **OPTS))
    crashed = tmp_path / "crash" / "tiny-lf" / "modc" / "seed1"
    monkeypatch.setattr(TrainingLoop, "training_step", original)
    resume_run(crashed)
    for name in ("matrix.csv", "metrics.csv", "matrix_prio_pseudo_top1_map_all.csv", "matrix_pl_acc.csv"):
        assert (crashed / name).read_text() == (full / name).read_text(), name


def test_modc_refuses_a_bad_option():
    from cl_fir.errors import ConfigError
    from cl_fir.registry import available_strategies

    cls = available_strategies()["modc"]
    with pytest.raises(ConfigError, match="view_fraction"):
        cls(cls.parse_options({"view_fraction": 1.5}))


def test_every_stage_runs_when_the_increment_is_shorter_than_the_schedule(tmp_path, cache_dir, monkeypatch):
    """synth-4inc-lf10 gives 2 epochs, the stages need 6: the steps are shared among them, so
    SimSiam, the unlabelled images and the pseudo-labels act; run.json says how many steps and
    images each stage had, and a crash inside a fitted epoch resumes exactly."""
    from cl_fir.engine.loop import TrainingLoop
    from cl_fir.errors import ConfigError

    _, child = _lf_scenario(tmp_path, "0.25")
    over = {"train.epochs": 2, "train.samples_per_epoch": 48, "train.checkpoint_every": 1}   # 6 steps an epoch
    with pytest.raises(ConfigError, match="train.epochs=2 is fewer than the 6 epochs"):
        resolve_config("modc", str(child), dict(over), strategy_options={"fit_schedule": False})
    seen = set()
    original_criterion = __import__("cl_fir.strategies.modc", fromlist=["MODC"]).MODC.criterion

    def spy(self, ctx):
        seen.add((ctx.increment.index, ctx.epoch, ctx.step, self.stage(ctx)))
        return original_criterion(self, ctx)

    monkeypatch.setattr("cl_fir.strategies.modc.MODC.criterion", spy)
    opts = {"confidence": 0.0}
    full = execute_run(resolve_config("modc", str(child), dict(over), output_dir=str(tmp_path / "full"), seed=2,
                                      strategy_options=opts))
    assert {stage for *_, stage in seen} == set(range(len(STAGES)))
    assert sorted(s for i, e, st, s in seen if i == 0 and e == 0) == [0, 0, 1, 1, 2, 2]   # stages change mid-epoch
    record = json.loads((full / "run.json").read_text())["strategy_info"]["modc_stages"]
    assert [r["increment"] for r in record] == [1, 2]
    for inc in record:
        stages = inc["stages"]
        assert list(stages) == list(STAGES)
        assert all(st["steps"] == 2 and st["images"] == 2 * 2 * 8 for st in stages.values())
        assert all(st["unlabelled_images"] == 0 for name, st in stages.items() if STAGES.index(name) < 3)
        assert all(st["unlabelled_images"] > 0 for name, st in stages.items() if STAGES.index(name) >= 3)
        assert stages["semi3_instance_pseudo"]["pseudo_labelled_pairs"] > 0
    assert sum(st["old_attribute_pseudo_labels"] for st in record[1]["stages"].values()) > 0

    monkeypatch.setattr("cl_fir.strategies.modc.MODC.criterion", original_criterion)
    original, calls = TrainingLoop.training_step, {"n": 0}

    def crashing_step(self, batch):    # increment 2, epoch 2, second step: inside semi-supervised step 2
        calls["n"] += 1
        if calls["n"] == 12 + 6 + 2:
            raise _Crash("simulated crash")
        return original(self, batch)

    monkeypatch.setattr(TrainingLoop, "training_step", crashing_step)
    with pytest.raises(_Crash):
        execute_run(resolve_config("modc", str(child), dict(over), output_dir=str(tmp_path / "crash"), seed=2,
                                   strategy_options=opts))
    crashed = tmp_path / "crash" / "tiny-lf" / "modc" / "seed2"
    monkeypatch.setattr(TrainingLoop, "training_step", original)
    resume_run(crashed)
    assert (crashed / "matrix.csv").read_text() == (full / "matrix.csv").read_text()
    resumed = json.loads((crashed / "run.json").read_text())["strategy_info"]["modc_stages"]
    assert resumed == record
