"""Training steps make no host reads beyond the ones they need (each is a GPU wait on CUDA)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from typer.testing import CliRunner

from cl_fir.cli import app
from cl_fir.runtime.host_syncs import HostSyncCounter
from cl_fir.runtime.device import resolve_device
from cl_fir.models.routing import route_by_group, route_through


def test_route_by_group_matches_a_loop_over_groups():
    """Each group's rows, ascending, once per group present; routed through a table from keys
    whose values the host kept (runtime/host_copies.py), the same without reading the device."""
    g = torch.Generator().manual_seed(0)
    for n, groups_present in ((1, 1), (7, 3), (40, 5)):
        groups = torch.randint(groups_present, (n,), generator=g) * 2          # odd groups stay empty
        x = torch.randn(n, 4, generator=g)
        calls = []

        def compute(h, idx):
            calls.append((h, idx))
            return x[idx] * (h + 1), x[idx].sum(1, keepdim=True)

        def calls_made():
            made = [(h, idx.tolist()) for h, idx in calls]
            calls.clear()
            return made

        expected = [(h, [i for i in range(n) if groups[i] == h]) for h in sorted(set(groups.tolist()))]
        scaled, sums = route_by_group(groups, compute, num_groups=2 * groups_present + 1)
        assert calls_made() == expected
        torch.testing.assert_close(scaled, x * (groups[:, None] + 1).float())
        torch.testing.assert_close(sums, x.sum(1, keepdim=True))
        table = torch.arange(2 * groups_present + 1)
        host_table = table.numpy()
        keys = resolve_device("cpu", "fp32").from_host(groups.tolist())
        with HostSyncCounter() as syncs:
            routed = route_through(table, host_table, keys, compute, num_groups=len(table))
        assert calls_made() == expected and syncs.total == 0
        torch.testing.assert_close(routed[0], scaled)
        with HostSyncCounter() as syncs:                                          # keys made on the device
            route_through(table, host_table, keys.clone(), compute, num_groups=len(table))
        assert calls_made() == expected
        assert {(op, where.split(":")[0]) for op, where in syncs.sites} == {("tolist", "models/routing.py")}


def test_counter_finds_reads_and_value_dependent_shapes_but_not_the_optimizer():
    p = torch.nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p], lr=0.1)
    t = torch.tensor([1.0, -2.0, 3.0])
    with HostSyncCounter() as syncs:
        t.sum().item()
        t.tolist()
        t[t > 0]
        t.nonzero()
        bool(t.any())
        t * 2                                                                   # no read
        p.sum().backward()
        opt.step()                                                              # its step-count reads are left out
    ops = Counter(op for op, _ in syncs.sites.elements())
    assert ops == {"item": 1, "tolist": 1, "index": 1, "nonzero": 1, "__bool__": 1}
    assert {where for _, where in syncs.sites} == {"?"}                       # no cl-fir line on the stack


def test_counter_finds_blocking_copies_to_a_device_but_not_asynchronous_ones():
    from cl_fir.runtime.device import resolve_device

    t = torch.ones(3)
    with HostSyncCounter() as syncs:
        torch.as_tensor([1, 2], device="cpu")
        torch.tensor([1.0], device=torch.device("cpu"))
        t.to("cpu")
        t.to(device="cpu")
        t.to("cpu", non_blocking=True)                                          # asynchronous: not counted
        t.to(torch.float64)                                                     # no device: not counted
        torch.as_tensor([1, 2])                                                 # stays on the host
        resolve_device("cpu", "fp32").from_host([1, 2, 3])                      # the harness's way
    ops = Counter(op for op, _ in syncs.sites.elements())
    assert ops == {"blocking as_tensor": 1, "blocking tensor": 1, "blocking to": 2}


def _reads_in_a_step_of_increment_2(strategy, scenario, tmp_path, monkeypatch, extra=()) -> Counter:
    from cl_fir.engine.loop import TrainingLoop

    original, seen = TrainingLoop.training_step, {}

    def counted(self, batch):
        if self.increment.index == 1 and not seen:
            with HostSyncCounter() as syncs:
                loss = original(self, batch)
            seen["sites"] = Counter({(op, where.split(":")[0]): n for (op, where), n in syncs.sites.items()})
            return loss
        return original(self, batch)

    monkeypatch.setattr(TrainingLoop, "training_step", counted)
    res = CliRunner().invoke(app, ["run", "--strategy", strategy, "--scenario", str(scenario), "--quiet",
                                   "--output-dir", str(tmp_path), *extra])
    assert res.exit_code == 0, res.output
    return seen["sites"]


@pytest.mark.parametrize("strategy, extra", [("finetune", ()), ("lwf", ()), ("ewc", ()),
                                             ("finetune", ("--head", "dnc"))])
def test_single_head_steps_read_only_the_loss(strategy, extra, tiny_scenario, tmp_path, monkeypatch):
    """On CUDA the loss is read one step late, behind an event (engine/loss_readback.py).
    The D&C head picks each row's cluster mask and its decorrelation term with masks
    (before: 6 reads a step, for the clustered rows, their attributes and masks in use)."""
    sites = _reads_in_a_step_of_increment_2(strategy, tiny_scenario, tmp_path, monkeypatch, extra)
    assert sites == {("__float__", "engine/loss_readback.py"): 1}


def test_multi_head_steps_route_without_reading_the_device(tiny_scenario, tmp_path, monkeypatch):
    """mcl_fir routes the batch, the distilled attributes through the student and through
    the teacher. The attributes come from the host (the loader, the host's draws), which
    keeps a copy of them (runtime/host_copies.py), so each routing works out its groups on
    the host (before: one read of the group sizes each; before that, unique, its tolist and
    one nonzero per head present)."""
    sites = _reads_in_a_step_of_increment_2("mcl_fir", tiny_scenario, tmp_path, monkeypatch)
    assert sites == {("__float__", "engine/loss_readback.py"): 1}


@pytest.mark.parametrize("strategy", ["finetune", "mcl_fir"])
def test_composed_steps_wait_only_for_the_loss(strategy, tmp_path, cache_dir, monkeypatch):
    """The text encoder's token lengths stay on the host (pack_padded_sequence wants them
    there), so its reads of them are host-side; the tokens go to the device asynchronously."""
    from test_composed_family import TINY_CIR

    scenario = tmp_path / "tiny-cir.toml"
    scenario.write_text(TINY_CIR.replace("{gallery}", "split").replace("{groups}", "3"))
    sites = _reads_in_a_step_of_increment_2(strategy, scenario, tmp_path / "out", monkeypatch)
    host_side = {k for k in sites if k[1] == "models/text_encoder.py"}
    assert {op for op, _ in host_side} <= {"__int__", "blocking cpu", "blocking to"}
    assert {k: n for k, n in sites.items() if k not in host_side} == {("__float__", "engine/loss_readback.py"): 1}
