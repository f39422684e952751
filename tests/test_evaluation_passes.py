"""An evaluation embeds every set of every task in one loader pass (two for composed
tasks), and each embedding equals the one its own set gives alone."""

from __future__ import annotations

import pytest
import torch

from cl_fir.evaluation import evaluator
from cl_fir.runner import build_loop, resolve_config


@pytest.fixture
def loaders(monkeypatch):
    """Counts the DataLoaders the evaluator builds."""
    built = []
    original = evaluator.DataLoader

    def counting(*args, **kwargs):
        built.append(kwargs.get("num_workers"))
        return original(*args, **kwargs)

    monkeypatch.setattr(evaluator, "DataLoader", counting)
    return built


def test_one_pass_embeds_each_set_as_it_would_alone(tiny_scenario, loaders):
    loop = build_loop(resolve_config("mcl_fir", str(tiny_scenario)))     # two heads: batches mix them
    model, setup = loop.model.eval(), loop.setup
    tasks = [loop.scenario.eval_tasks[a] for a in loop.scenario.seen_tasks(1)]
    sets = [(s, t.attribute) for t in tasks for s in (t.queries, t.candidates)]
    together = evaluator.embed_under_attributes(model, sets, setup, batch_size=7, num_workers=0)
    assert len(loaders) == 1
    for (dataset, attribute), emb in zip(sets, together):
        alone, = evaluator.embed_under_attributes(model, [(dataset, attribute)], setup, batch_size=5, num_workers=0)
        torch.testing.assert_close(emb, alone, rtol=1e-5, atol=1e-6)
    loaders.clear()
    results, images = evaluator.evaluate_tasks(model, tasks, setup, loop.cfg.eval, num_workers=2)
    assert loaders == [2] and set(results) == {t.attribute for t in tasks}
    assert images == sum(len(d) for d, _ in sets)


def test_composed_tasks_take_two_passes(tmp_path, cache_dir, loaders):
    from test_composed_family import TINY_CIR

    scenario = tmp_path / "tiny-cir.toml"
    scenario.write_text(TINY_CIR.replace("{gallery}", "split").replace("{groups}", "3"))
    loop = build_loop(resolve_config("mcl_fir", str(scenario)))
    model, setup = loop.model.eval(), loop.setup
    tasks = [loop.scenario.eval_tasks[a] for a in loop.scenario.seen_tasks(2)]
    results, _ = evaluator.evaluate_tasks(model, tasks, setup, loop.cfg.eval)
    assert len(loaders) == 2 and len(results) == 3
    for task, (q, g) in zip(tasks, evaluator.embed_composed(model, tasks, setup, 4, 0)):
        torch.testing.assert_close(g, evaluator.embed_batches(task.gallery, lambda x, *_: model.embed_target(x),
                                                              setup, 3, 0), rtol=1e-5, atol=1e-6)
        assert q.shape == (len(task.queries), g.shape[1])
