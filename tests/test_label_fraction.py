"""Label-fraction scenarios: the stratified labelled split, the unlabelled view, `extends`."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import write_scenario

from cl_fir.data.asen_meta import SampleTable
from cl_fir.data.label_fraction import hide_values, labelled_mask
from cl_fir.errors import ConfigError
from cl_fir.runner import execute_run, resolve_config
from cl_fir.scenario import Scenario, apply_spec_defaults, load_spec


def _table():
    rng = np.random.default_rng(0)
    attrs = np.repeat([0, 1], 100)
    values = np.concatenate([rng.integers(4, size=100), rng.integers(7, size=100)])
    return SampleTable(np.arange(200), attrs, values)


@pytest.mark.parametrize("fraction", [0.01, 0.05, 0.1, 0.5, 1.0])
def test_every_value_keeps_its_share_and_at_least_one_row(fraction):
    table = _table()
    mask = labelled_mask(table, fraction, seed=3)
    for a, v in set(zip(table.attributes.tolist(), table.values.tolist())):
        group = (table.attributes == a) & (table.values == v)
        assert mask[group].sum() == max(1, round(fraction * group.sum()))
    assert (labelled_mask(table, fraction, seed=3) == mask).all()
    if fraction < 1:
        assert not (labelled_mask(table, fraction, seed=4) == mask).all()
    with pytest.raises(ValueError, match="label_fraction"):
        labelled_mask(table, 0.0)


def test_unlabelled_rows_keep_attribute_and_lose_value():
    hidden = hide_values(_table())
    assert (hidden.values == -1).all() and (hidden.attributes == _table().attributes).all()


def _lf_scenario(folder, fraction="0.25", extra=""):
    base = write_scenario(folder, '[["skirt_length", "sleeve_length"], ["coat_length", "pant_length"]]', name="base.toml",
                          **{"train_per_attribute = 16": "train_per_attribute = 64"})
    child = folder / "lf.toml"
    child.write_text(f'extends = "base.toml"\nname = "tiny-lf"\n\n[increments]\nlabel_fraction = {fraction}\n'
                     + extra)
    return base, child


def test_scenario_extends_its_base_and_splits_every_increment(tmp_path, cache_dir):
    base, child = _lf_scenario(tmp_path)
    spec = load_spec(str(child))
    assert spec.name == "tiny-lf" and spec.dataset == load_spec(str(base)).dataset
    assert spec.increments["label_fraction"] == 0.25 and "attributes" in spec.increments
    cfg = resolve_config("finetune", str(child))
    apply_spec_defaults(spec, cfg)
    full = Scenario(load_spec(str(base)), cfg)
    part = Scenario(spec, cfg)
    for inc_full, inc in zip(full.increments, part.increments):
        assert len(inc.train_table) + len(inc.unlabelled_table) == len(inc_full.train_table)
        assert len(inc.train_table) < len(inc_full.train_table) / 2
    dataset, table = part.unlabelled_data([0])
    assert len(dataset) == len(table) == len(part.increments[0].unlabelled_table) and (table.values == -1).all()
    with pytest.raises(ConfigError, match="has no unlabelled data"):
        full.unlabelled_data([0])


def test_runs_say_that_the_strategy_uses_only_the_labelled_rows(tmp_path, cache_dir):
    _, child = _lf_scenario(tmp_path)
    run = execute_run(resolve_config("finetune", str(child), output_dir=str(tmp_path / "out")))
    info = json.loads((run / "run.json").read_text())
    assert info["label_fraction"] == 0.25 and info["unlabelled_used"] is False
    assert all(t["num_unlabelled"] > 0 for t in info["tasks"])


@pytest.mark.parametrize("value, message", [("0", "label_fraction must be a number in .0, 1."),
                                            ('"ten"', "label_fraction must be a number")])
def test_bad_label_fraction_is_named(tmp_path, cache_dir, value, message):
    _, child = _lf_scenario(tmp_path, value)
    cfg = resolve_config("finetune", str(child))
    with pytest.raises(ConfigError, match=message):
        Scenario(load_spec(str(child)), cfg)


def test_extends_cycle_is_refused(tmp_path):
    (tmp_path / "a.toml").write_text('extends = "b.toml"\nname = "a"\n')
    (tmp_path / "b.toml").write_text('extends = "a.toml"\nname = "b"\n')
    with pytest.raises(ConfigError, match="makes a cycle"):
        load_spec(str(tmp_path / "a.toml"))


def test_shipped_lf10_scenarios_extend_their_base():
    for name in ("synth-4inc-lf10", "fashionai-4inc-lf10", "darn-3inc-lf10"):
        spec = load_spec(name)
        assert spec.increments["label_fraction"] == 0.1
        base = load_spec(name[: -len("-lf10")])
        assert spec.dataset == base.dataset and spec.sections == base.sections
