"""The composed-retrieval family end to end on a tiny synth-cir scenario (FashionIQ format)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import TINY_SCENARIO

from cl_fir.data.composed import read_fashioniq
from cl_fir.data.synth_composed import CATEGORIES, SynthComposedConfig, ensure_synth_composed
from cl_fir.errors import ConfigError
from cl_fir.report.run_dir import load_run
from cl_fir.runner import execute_run, resolve_config, resume_run

TINY_CIR = """
name = "tiny-cir"
family = "composed"

[dataset]
reader = "synth-cir"
seed = 3
image_size = 32
train_per_category = 24
val_per_category = 8
distractors_per_category = 4
gallery = "{gallery}"

[increments]
groups = {groups}
""" + TINY_SCENARIO[TINY_SCENARIO.index("[model]"):TINY_SCENARIO.index("[eval]")].replace(
    "crop = 32", "crop = 32\nhflip = false").replace("epochs = 1", "epochs = 2") + """
[eval]
split = "valid"
"""


@pytest.fixture(scope="module")
def cir_scenario(tmp_path_factory, cache_dir):
    path = tmp_path_factory.mktemp("cir") / "tiny-cir.toml"
    path.write_text(TINY_CIR.replace("{gallery}", "split").replace("{groups}", "3"))
    return path


def test_synthetic_data_is_written_in_fashioniq_format(tmp_path):
    cfg = SynthComposedConfig(seed=1, image_size=32, train_per_category=6, val_per_category=4,
                              distractors_per_category=2)
    root = ensure_synth_composed(cfg, tmp_path)
    assert ensure_synth_composed(cfg, tmp_path) == root            # cached
    split = read_fashioniq(root / "fashionIQ", "val", CATEGORIES, extension="png")
    val = read_fashioniq(root / "fashionIQ", "val", CATEGORIES, gallery="val", extension="png")
    assert len(split.queries) == 12 and all(len(q.texts) == 2 and len(q.targets) == 1 for q in split.queries)
    assert {c: len(g) for c, g in split.galleries.items()} == {c: 10 for c in CATEGORIES}   # 2 x 4 + 2 distractors
    assert {c: len(g) for c, g in val.galleries.items()} == {c: 8 for c in CATEGORIES}
    assert all(p.is_file() for p in split.image_path.values())


def test_a_process_that_loses_the_generation_race_reads_the_winners_copy(tmp_path, monkeypatch):
    """Two runs generating the same copy at once: the one that finishes second keeps the
    copy the first one put in place (and may be reading) instead of replacing it."""
    import cl_fir.data.synth_composed as synth

    cfg = SynthComposedConfig(seed=2, image_size=16, train_per_category=2, val_per_category=2,
                              distractors_per_category=0)
    root = ensure_synth_composed(cfg, tmp_path)
    (root / "fashionIQ" / "winner").write_text("")            # the winner's copy, in use
    real_is_file, checks = synth.Path.is_file, []

    def is_file(self):                                         # the loser checked before the winner finished
        if self.name == "complete":
            checks.append(self)
            if len(checks) == 1:
                return False
        return real_is_file(self)

    monkeypatch.setattr(synth.Path, "is_file", is_file)
    assert ensure_synth_composed(cfg, tmp_path) == root
    assert (root / "fashionIQ" / "winner").is_file()         # not replaced
    assert [p.name for p in tmp_path.iterdir()] == [root.name]   # the loser's temporary copy is gone


@pytest.mark.parametrize("strategy, loss", [("finetune", "infonce"), ("static", "uncertainty"),
                                            ("lwf", "infonce"), ("ewc", "uncertainty"), ("mcl_fir", "infonce")])
def test_composed_runs_record_recall_and_resume_exactly(strategy, loss, cir_scenario, tmp_path):
    kw = dict(overrides={"loss.composed": loss}, seed=1)
    full = execute_run(resolve_config(strategy, str(cir_scenario), output_dir=str(tmp_path / "a"), **kw))
    run = load_run(full)
    assert run.complete and run.matrix.shape == (3, 3) and np.isfinite(run.matrix[2]).all()
    info = json.loads((full / "run.json").read_text())
    assert info["primary_metric"] == "recall@10" and info["protocol"] == "composed"
    for k in (1, 50):
        assert (full / f"matrix_recall_at_{k}.csv").is_file()
    assert "Recall@10" in (full / "summary.md").read_text()
    cost = json.loads((full / "cost.json").read_text())["increments"]
    if strategy in ("lwf", "mcl_fir"):      # distillation ran from the second increment on
        assert cost[0]["extra_forward_images"] == 0 and all(c["extra_forward_images"] > 0 for c in cost[1:])
    split = execute_run(resolve_config(strategy, str(cir_scenario), output_dir=str(tmp_path / "b"), **kw),
                        stop_after=1)
    resume_run(split)
    assert (split / "matrix.csv").read_text() == (full / "matrix.csv").read_text()


def test_composed_scenarios_are_avalanche_benchmarks_that_training_reads(cir_scenario):
    from avalanche.benchmarks.scenarios import CLScenario

    from cl_fir.scenario import build_scenario, load_spec

    sc = build_scenario(load_spec(str(cir_scenario)), resolve_config("finetune", str(cir_scenario)))
    bm = sc.benchmark
    assert isinstance(bm, CLScenario) and len(bm.train_stream) == len(bm.test_stream) == 3
    for i, (train, test) in enumerate(zip(bm.train_stream, bm.test_stream)):
        assert train.task_labels == [i] and train.classes_in_this_experience == [i]      # one category each
        ref, text, tgt, task = train.dataset[0]
        assert tuple(ref.shape) == tuple(tgt.shape) == (3, 32, 32) and isinstance(text, str) and task == i
        assert len(test.dataset) == sc.eval_tasks[i].num_queries and test.dataset[0][3] == i
    dataset, table = sc.training_data([1, 2])          # what training reads: the stream's datasets
    assert len(dataset) == len(bm.train_stream[1].dataset) + len(bm.train_stream[2].dataset)
    assert sorted(table.image_ids.tolist()) == list(range(len(dataset)))
    assert [dataset[int(k)][3] for k in table.image_ids] == table.attributes.tolist()


def test_strategies_without_the_composed_family_say_so(cir_scenario):
    for name in ("replay", "mcl_fir_isolated"):
        with pytest.raises(ConfigError, match=f"{name}.*supports: attribute"):
            resolve_config(name, str(cir_scenario))


def test_bad_composed_settings_are_named(cir_scenario, tmp_path):
    with pytest.raises(ConfigError, match="loss.composed: expected infonce or uncertainty"):
        resolve_config("finetune", str(cir_scenario), {"loss.composed": "triplet"})
    bad = tmp_path / "bad.toml"
    bad.write_text(TINY_CIR.replace("{gallery}", "union").replace("{groups}", "3"))
    with pytest.raises(ConfigError, match="gallery must be 'split' or 'val'"):
        execute_run(resolve_config("finetune", str(bad), output_dir=str(tmp_path / "out")))
    bad.write_text(TINY_CIR.replace("{gallery}", "split").replace("{groups}", "2"))
    with pytest.raises(ConfigError, match="groups must divide the 3 categories"):
        execute_run(resolve_config("finetune", str(bad), output_dir=str(tmp_path / "out2")))


def _tiny(reader: str, increments: str, dataset: str = "") -> str:
    rest = TINY_CIR.split("[model]", 1)[1]
    return (f'name = "tiny-{reader}"\nfamily = "composed"\n\n[dataset]\nreader = "{reader}"\n{dataset}\n'
            f"[increments]\n{increments}\n\n[model]{rest}").replace('split = "valid"', 'split = "test"')


def _jpeg(path, colour):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 40), colour).save(path)


def test_shoes_and_fashion200k_scenarios_run_from_their_distributed_files(tmp_path, cache_dir):
    root = tmp_path / "data"
    shoes = root / "shoes"
    names = {s: [f"img_womens_{c}_{i}.jpg" for c in ("boots", "clogs") for i in r]
             for s, r in (("train", range(1, 9)), ("eval", range(9, 15)))}
    for split, files in names.items():
        (shoes.mkdir(parents=True, exist_ok=True), (shoes / f"{split}_im_names.txt").write_text("\n".join(files)))
        for i, name in enumerate(files):
            _jpeg(shoes / "attributedata" / ("womens_" + name.split("_")[2]) / "0" / name, (20 * i, 100, 50))
    caps = [{"ImageName": files[i + 1], "ReferenceImageName": files[i], "RelativeCaption": f"is darker {i}"}
            for files in names.values() for i in range(len(files) - 1) if files[i].split("_")[2] ==
            files[i + 1].split("_")[2]]
    (shoes / "relative_captions_shoes.json").write_text(json.dumps(caps))
    f200k = root / "fashion200k"
    for split, colours in (("train", ("red", "blue", "green")), ("test", ("black", "white"))):
        for cat, folder in (("dress", "dresses"), ("skirt", "skirts")):
            lines = []
            for i, (colour, fabric) in enumerate((c, f) for c in colours for f in ("silk", "cotton")):
                key = f"women/{folder}/casual/{split}{i}/{split}{i}_0.jpeg"
                _jpeg(f200k / key, (40 * i, 20, 200))
                lines.append(f"{key}\t0.9\t{colour} {fabric} {cat}")
            (f200k / "labels").mkdir(parents=True, exist_ok=True)
            (f200k / "labels" / f"{cat}_{split}_detect_all.txt").write_text("\n".join(lines) + "\n")
    (f200k / "test_queries.txt").write_text(
        "women/dresses/casual/test0/test0_0.jpeg women/dresses/casual/test2/test2_0.jpeg\n"
        "women/skirts/casual/test1/test1_0.jpeg women/skirts/casual/test3/test3_0.jpeg\n")
    for reader, increments, dataset in (
            ("shoes", 'categories = [["womens_boots"], ["womens_clogs"]]', ""),
            ("fashion200k", 'categories = [["dress"], ["skirt"]]', 'categories = ["dress", "skirt"]\n')):
        path = tmp_path / f"{reader}.toml"
        path.write_text(_tiny(reader, increments, dataset))
        run = execute_run(resolve_config("finetune", str(path), output_dir=str(tmp_path / "out"),
                                         data_root=str(root)))
        info = json.loads((run / "run.json").read_text())
        assert info["status"] == "complete" and [t["num_train"] > 0 for t in info["tasks"]] == [True, True]
        shared_gallery = {t["num_candidates"] for t in info["tasks"]}
        assert len(shared_gallery) == 1          # one gallery for every category


def test_a_local_sentence_transformer_replaces_the_gru(cir_scenario, tmp_path):
    pytest.importorskip("sentence_transformers")
    from test_text_and_compositor import _tiny_sentence_transformer

    checkpoint = _tiny_sentence_transformer(tmp_path / "st")
    run = execute_run(resolve_config("finetune", str(cir_scenario), output_dir=str(tmp_path / "out"), overrides={
        "model.text_encoder": "sentence-transformer", "model.text_checkpoint": str(checkpoint)}))
    assert load_run(run).complete
    with pytest.raises(ConfigError, match="needs model.text_checkpoint"):
        execute_run(resolve_config("finetune", str(cir_scenario), output_dir=str(tmp_path / "out2"),
                                   overrides={"model.text_encoder": "sentence-transformer"}))


def test_every_modifiable_attribute_has_caption_templates():
    from cl_fir.data.synth_composed import CATEGORIES, caption
    from cl_fir.data.synthfashion import ATTRIBUTES, LENGTH_OF, NECK_OF

    for category in CATEGORIES:
        attrs = ["sleeve_length", *NECK_OF[category]] + ([LENGTH_OF[category]] if category in LENGTH_OF else [])
        for attr in attrs:
            for value in ATTRIBUTES[attr][1:]:
                assert all(caption(attr, value, variant) for variant in (0, 1))
