"""Scenarios: TOML loading and validation, the Avalanche benchmark, evaluation sets."""

from __future__ import annotations

import pytest
from avalanche.benchmarks.scenarios import CLScenario

from cl_fir.errors import ConfigError
from cl_fir.runner import resolve_config
from cl_fir.scenario import Scenario, available_scenarios, load_spec
from conftest import write_scenario


def build(path):
    cfg = resolve_config("finetune", str(path))
    return Scenario(load_spec(str(path)), cfg)


def test_shipped_scenarios_load():
    shipped = available_scenarios()
    assert {"synth-4inc", "synth-2inc"} <= set(shipped)
    spec = load_spec("synth-4inc")
    assert spec.increments == {"groups": 4} and spec.dataset["reader"] == "synthfashion"


def test_builds_a_real_avalanche_benchmark(tiny_scenario):
    sc = build(tiny_scenario)
    bm = sc.benchmark
    assert isinstance(bm, CLScenario)
    assert len(bm.train_stream) == 2 and len(bm.test_stream) == 2
    exp0, exp1 = bm.train_stream[0], bm.train_stream[1]
    assert sorted(exp0.task_labels) == [0, 1] and sorted(exp1.task_labels) == [2, 3]
    offsets = sc.meta.class_offsets
    assert exp0.classes_in_this_experience == list(range(offsets[0], offsets[2]))   # sorted lists, not sets
    assert isinstance(exp1.previous_classes, list)
    x, y, t = exp0.dataset[0]
    assert tuple(x.shape) == (3, 32, 32) and isinstance(y, int) and t in (0, 1)
    assert sc.tasks == [0, 1, 2, 3] and sc.task_increment.tolist() == [0, 0, 1, 1]
    assert sc.seen_tasks(0) == [0, 1]


def test_evaluation_sets_per_task(tiny_scenario):
    sc = build(tiny_scenario)
    for a in sc.tasks:
        task = sc.eval_tasks[a]
        assert task.num_queries == 8 and len(task.candidates) == 16
        assert set(task.queries.table.attributes.tolist()) == {a}
    dataset, table = sc.training_data([0, 1])
    assert len(dataset) == len(table) == 4 * 16


def test_contiguous_groups(tmp_path, cache_dir):
    path = write_scenario(tmp_path, "[]", **{"[increments]\nattributes = []": "[increments]\ngroups = 2"})
    sc = build(path)
    assert [inc.attributes for inc in sc.increments] == [(0, 1, 2, 3), (4, 5, 6, 7)]


@pytest.mark.parametrize("increments, message", [
    ('[["skirt_length"], ["skirt_length"]]', "more than one increment"),
    ('[["skirt_length", "nope"]]', "unknown attribute 'nope'"),
    ('[]', "non-empty list"),
])
def test_bad_increments(tmp_path, cache_dir, increments, message):
    with pytest.raises(ConfigError, match=message):
        build(write_scenario(tmp_path, increments))


def test_bad_scenario_files(tmp_path, cache_dir):
    with pytest.raises(ConfigError, match="unknown scenario 'nope'"):
        load_spec("nope")
    with pytest.raises(ConfigError, match="does not exist"):
        load_spec(str(tmp_path / "missing.toml"))
    (tmp_path / "bad.toml").write_text("name = [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_spec(str(tmp_path / "bad.toml"))
    (tmp_path / "extra.toml").write_text('name = "x"\ndataset = {}\nincrements = {}\nbogus = 1\n')
    with pytest.raises(ConfigError, match="unknown key"):
        load_spec(str(tmp_path / "extra.toml"))
    groups = write_scenario(tmp_path, "[]", name="g.toml", **{"attributes = []": "groups = 3"})
    with pytest.raises(ConfigError, match="groups must divide"):
        build(groups)
    typo = write_scenario(tmp_path, '[["skirt_length"]]', name="t.toml", **{"epochs = 1": "epoch = 1"})
    with pytest.raises(ConfigError, match=r"\[train\]: unknown key 'epoch'"):
        resolve_config("finetune", str(typo))


def test_real_dataset_scenario_needs_a_data_root(tmp_path, monkeypatch):
    monkeypatch.delenv("CL_FIR_DATA", raising=False)
    path = tmp_path / "real.toml"
    path.write_text('name = "real"\n[dataset]\nreader = "asen-meta"\nkey = "FashionAI"\n[increments]\ngroups = 4\n')
    cfg = resolve_config("finetune", str(path))
    with pytest.raises(ConfigError, match="--data-root"):
        Scenario(load_spec(str(path)), cfg)
