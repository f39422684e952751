"""Readers, scenarios, `cl-fir data verify` and runs on tiny copies of the real datasets."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from typer.testing import CliRunner

from cl_fir.cli import app
from cl_fir.data.asen_meta import AsenMetaDataset
from cl_fir.data.problems import ProblemLog
from cl_fir.data.zappos import ZapposDataset
from cl_fir.errors import ConfigError, DataFormatError
from cl_fir.runner import resolve_config
from cl_fir.scenario import Scenario, load_spec
from dataset_fixtures import make_all, make_deepfashion, make_zappos

runner = CliRunner()

#: Shipped scenarios, shrunk to a tiny model and schedule for tests.
TINY = {"model.backbone": "test_resnet", "model.feature_index": 3, "model.embed_dim": 16, "model.attr_dim": 8,
        "transforms.resize": 32, "transforms.crop": 32, "train.epochs": 1, "train.samples_per_epoch": 16,
        "train.batch_size": 8, "eval.recall_ks": [1, 5], "eval.map_k": 10}
TINY_ARGS = [a for k, v in TINY.items() for a in ("--set", f"{k}={','.join(map(str, v)) if isinstance(v, list) else v}")]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    written = make_all(root)
    return root, written


@pytest.fixture
def root(pristine, tmp_path):
    dest = tmp_path / "data"
    shutil.copytree(pristine[0], dest)
    return dest


def _scenario(name, data_root, cache_dir, strict=False, **extra):
    cfg = resolve_config("finetune", name, {**TINY, **extra}, data_root=str(data_root), cache_dir=str(cache_dir))
    return Scenario(load_spec(name), cfg, strict=strict)


# ------------------------------------------------------------------ readers


def test_fashionai_reader_matches_the_files(pristine):
    root, written = pristine
    ds = AsenMetaDataset(root, "FashionAI")
    assert ds.meta.names[0] == "skirt_length" and ds.meta.num_values == (6, 9, 8, 6, 5, 5, 10, 5)
    train = ds.train_samples()
    assert len(train) == written["FashionAI"].lines["label_train.txt"] == len(ds.filenames("train"))
    q, c = ds.eval_samples("test", "query"), ds.eval_samples("test", "candidate")
    assert not set(q.image_ids) & set(c.image_ids)
    assert sorted(np.concatenate([q.image_ids, c.image_ids])) == list(range(len(ds.filenames("test"))))


def test_darn_multi_label_lines_and_missing_final_newline(pristine):
    root, written = pristine
    assert not (root / "DARN" / "filenames_test.txt").read_bytes().endswith(b"\n")
    ds = AsenMetaDataset(root, "DARN")
    assert len(ds.filenames("test")) == written["DARN"].lines["filenames_test.txt"]
    train = ds.train_samples()
    assert len(train) > len(ds.filenames("train"))          # several (attribute, value) pairs per image
    assert set(train.attributes.tolist()) == set(range(9))
    c = ds.eval_samples("test", "candidate")
    assert c.image_ids.max() < ds.eval_samples("test", "query").image_ids.min()   # candidates first


def test_deepfashion_one_based_type_codes_are_normalised(tmp_path):
    zero = make_deepfashion(tmp_path / "a")
    one = make_deepfashion(tmp_path / "b", one_based_train_types=True)
    assert zero.lines == one.lines
    t0 = AsenMetaDataset(tmp_path / "a", "DeepFashion").train_samples()
    ds = AsenMetaDataset(tmp_path / "b", "DeepFashion")
    t1 = ds.train_samples()
    assert t0.attributes.tolist() == t1.attributes.tolist() and t0.values.tolist() == t1.values.tolist()
    assert ds.problems.counts() == {"one-based-types": 1}


@pytest.mark.parametrize("fmt", ["json", "lines"])
def test_zappos_filenames_as_json_or_lines(tmp_path, fmt):
    written = make_zappos(tmp_path, filenames_format=fmt)
    ds = ZapposDataset(tmp_path)
    assert len(ds.filenames()) == 40 and ds.image_paths()[0].is_file()
    test = ds.triplets("test")
    assert len(test) == 4 * 8 and sorted(set(test.attributes.tolist())) == [0, 1, 2, 3]
    labels = written.extra["labels"]["heel"]
    heel = test.for_attributes([3])
    assert all(labels[a] == labels[c] != labels[f] for a, f, c in zip(heel.anchors, heel.far, heel.close))
    train = ds.train_samples()
    assert len(train) == 2 * 4 * 12
    # each training doublet is one (condition, value) group of exactly two rows: anchor and close
    _, counts = np.unique(np.stack([train.attributes, train.values]), axis=1, return_counts=True)
    assert set(counts.tolist()) == {2}


def test_duplicate_lines_are_kept_once_with_a_warning(root):
    path = root / "FashionAI" / "query_test.txt"
    first = path.read_text().splitlines()[0]
    path.write_text(path.read_text() + first + "\n")
    ds = AsenMetaDataset(root, "FashionAI")
    q = ds.eval_samples("test", "query")
    assert len(q) == len(path.read_text().splitlines()) - 1
    (warning,) = ds.problems.warnings
    assert warning.kind == "duplicate" and warning.path.endswith("query_test.txt")


MALFORMED = [
    ("FashionAI/label_train.txt", 3, "3 7 x", "as integers"),
    ("FashionAI/query_test.txt", 2, "4 1 1 7", "expected 'img_id attr value'"),
    ("FashionAI/candidate_valid.txt", 1, "0 4 5", "value 5 out of range for attribute collar_design"),
    ("FashionAI/label_train.txt", 2, "1 8 0", "attribute 8 out of range"),
    ("FashionAI/query_valid.txt", 3, "999 0 0", "image id 999 out of range"),
    ("DARN/label_train.txt", 4, "3 0 1 2", "expected 'img_id attr value [attr value ...]'"),
    ("DeepFashion/query_test.txt", 1, "25 5 0", "attribute 5 out of range"),
]


@pytest.mark.parametrize("relpath, line, text, message", MALFORMED)
def test_malformed_label_lines_name_file_and_line(root, relpath, line, text, message):
    path = root / relpath
    lines = path.read_text().splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")
    key = relpath.split("/")[0]
    ds = AsenMetaDataset(root, key)
    with pytest.raises(DataFormatError) as err:
        name = path.name
        if name.startswith("label"):
            ds.train_samples()
        else:
            ds.eval_samples(name.split("_")[1][:-4], name.split("_")[0])
    assert f"{path}:{line}:" in str(err.value) and message in str(err.value)


@pytest.mark.parametrize("relpath, content, where, message", [
    ("Zappos50k/tripletlists/gender_tripletlist_test.txt", "1 2\n", ":1:", "expected 'anchor far close'"),
    ("Zappos50k/tripletlists/class_tripletlist_train.txt", "1 2 3\n4 5 400\n", ":2:", "image id 400 out of range"),
    ("Zappos50k/filenames.json", '["a.jpg", 3]', "filenames.json", "entry 1 is 3"),
    ("Zappos50k/filenames.json", '["a.jpg",', "filenames.json", "not a valid JSON array"),
    ("meta.json", "{not json", "meta.json", "not valid JSON"),
])
def test_malformed_files_name_the_place(root, relpath, content, where, message):
    (root / relpath).write_text(content)
    with pytest.raises(DataFormatError) as err:
        if relpath == "meta.json":
            AsenMetaDataset(root, "FashionAI")
        else:
            ZapposDataset(root).triplets("test")
    assert where in str(err.value) and message in str(err.value)


def test_collecting_log_reports_every_problem_at_once(root):
    path = root / "FashionAI" / "label_train.txt"
    lines = path.read_text().splitlines()
    lines[0], lines[5] = "0 9 0", "5 0 77"
    path.write_text("\n".join(lines) + "\n")
    log = ProblemLog(collect=True)
    AsenMetaDataset(root, "FashionAI", log).train_samples()
    assert [(p.kind, p.line) for p in log.errors] == [("out-of-range", 1), ("out-of-range", 6)]


# ------------------------------------------------------------------ scenarios


@pytest.mark.parametrize("name, tasks, increments", [
    ("fashionai-2inc", 8, 2), ("fashionai-4inc", 8, 4), ("fashionai-8inc", 8, 8), ("darn-3inc", 9, 3),
    ("darn-9inc", 9, 9), ("deepfashion-5inc", 5, 5), ("zappos-4inc", 4, 4), ("mclfir-22tasks", 22, 22),
])
def test_shipped_real_scenarios_build(pristine, cache_dir, name, tasks, increments):
    sc = _scenario(name, pristine[0], cache_dir)
    assert len(sc.tasks) == tasks and len(sc.increments) == increments
    assert len(sc.benchmark.train_stream) == increments
    if name == "fashionai-4inc":
        assert [sc.meta.names[a] for a in sc.increments[1].attributes] == ["coat_length", "pant_length"]
    if name == "mclfir-22tasks":
        assert sc.task_names[0] == "FashionAI/skirt_length" and sc.task_names[8] == "DeepFashion/texture-related"
        assert sc.task_names[13] == "DARN/clothes category"
        assert [sc.dataset_of_task(a) for a in (0, 8, 21)] == ["FashionAI", "DeepFashion", "DARN"]
        # image ids of the three datasets do not collide: every eval image path is the right dataset's
        task = sc.eval_tasks[13]
        assert all("/DARN/" in str(task.queries.image_paths[i]) for i in task.queries.table.image_ids)
    if name == "zappos-4inc":
        assert sc.protocol == "triplet" and sc.eval_tasks[0].num_queries == 8


def test_real_scenario_needs_a_data_root(cache_dir, monkeypatch):
    monkeypatch.delenv("CL_FIR_DATA", raising=False)
    cfg = resolve_config("finetune", "fashionai-4inc", TINY, cache_dir=str(cache_dir))
    with pytest.raises(ConfigError, match="--data-root"):
        Scenario(load_spec("fashionai-4inc"), cfg)


def _break_images(root):
    """One missing train image, one unreadable query image and one truncated candidate image in DARN."""
    ds = AsenMetaDataset(root, "DARN")
    train_img = ds.image_paths("train")[2]
    train_img.unlink()
    q = ds.eval_samples("test", "query")
    c = ds.eval_samples("test", "candidate")
    bad_query = ds.image_paths("test")[int(q.image_ids[1])]
    bad_query.write_text("this is not a jpeg")
    bad_cand = ds.image_paths("test")[int(c.image_ids[0])]
    bad_cand.write_bytes(b"")
    return train_img, bad_query, bad_cand


def test_bad_images_are_skipped_and_counted(root, cache_dir):
    train_img, _, _ = _break_images(root)
    ds = AsenMetaDataset(root, "DARN")
    image2_rows = int((ds.train_samples().image_ids == 2).sum())
    sc = _scenario("darn-3inc", root, cache_dir)
    report = sc.data_report
    assert report["bad_images"] == 3
    assert report["bad_by_reason"] == {"missing": 1, "unreadable": 1, "empty": 1}
    assert report["skipped_rows"] == {"train": image2_rows, "query": 1, "candidate": 1}
    assert all(2 not in inc.train_table.image_ids for inc in sc.increments)


def test_strict_refuses_to_start_on_bad_images(root, cache_dir):
    train_img, _, _ = _break_images(root)
    with pytest.raises(DataFormatError) as err:
        _scenario("darn-3inc", root, cache_dir, strict=True)
    assert "3 of" in str(err.value) and str(train_img) in str(err.value) and "--strict" in str(err.value)


# ------------------------------------------------------------------ runs


def test_run_on_darn_with_bad_images_completes_and_reports_them(root, cache_dir, tmp_path):
    _break_images(root)
    out = tmp_path / "results"
    res = runner.invoke(app, ["run", "--strategy", "finetune", "--scenario", "darn-3inc", "--data-root", str(root),
                              "--output-dir", str(out), "--quiet", *TINY_ARGS])
    assert res.exit_code == 0, res.output
    run_dir = out / "darn-3inc" / "finetune" / "seed0"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["status"] == "complete" and info["data"]["bad_images"] == 3
    assert info["primary_metric"] == "map_all"
    summary = (run_dir / "summary.md").read_text()
    assert "missing or unreadable: 3" in summary and "final (query-weighted)" in summary
    res = runner.invoke(app, ["run", "--strategy", "finetune", "--scenario", "darn-3inc", "--data-root", str(root),
                              "--output-dir", str(out), "--run-id", "strict", "--strict", "--quiet", *TINY_ARGS])
    assert res.exit_code == 2 and "missing or unreadable" in res.output


def test_zappos_run_reports_triplet_accuracy(pristine, cache_dir, tmp_path):
    out = tmp_path / "results"
    res = runner.invoke(app, ["run", "--strategy", "mcl_fir", "--scenario", "zappos-4inc", "--data-root",
                              str(pristine[0]), "--output-dir", str(out), "--quiet", *TINY_ARGS])
    assert res.exit_code == 0, res.output
    run_dir = out / "zappos-4inc" / "mcl_fir" / "seed0"
    info = json.loads((run_dir / "run.json").read_text())
    assert info["primary_metric"] == "triplet_acc" and info["protocol"] == "triplet"
    header = (run_dir / "matrix.csv").read_text().splitlines()[0]
    assert header == "increment,class,closure,gender,heel"
    assert "triplet accuracy" in (run_dir / "summary.md").read_text() and "triplet accuracy" in res.output
    assert not list(run_dir.glob("matrix_*.csv"))


def test_cross_dataset_run_reports_meanap_per_dataset(pristine, cache_dir, tmp_path):
    out = tmp_path / "results"
    res = runner.invoke(app, ["run", "--strategy", "finetune", "--scenario", "mclfir-22tasks", "--data-root",
                              str(pristine[0]), "--output-dir", str(out), "--quiet", *TINY_ARGS,
                              "--set", "train.samples_per_epoch=8"])
    assert res.exit_code == 0, res.output
    summary = (out / "mclfir-22tasks" / "finetune" / "seed0" / "summary.md").read_text()
    section = summary.split("## Per dataset, after the last increment")[1].split("##")[0]
    assert "| FashionAI | 8 |" in section and "| DeepFashion | 5 |" in section and "| DARN | 9 |" in section


# ------------------------------------------------------------------ cl-fir data verify


@pytest.mark.parametrize("name", ["fashionai", "darn", "deepfashion", "zappos50k", "fashionai-4inc"])
def test_verify_passes_on_good_copies(pristine, cache_dir, name):
    res = runner.invoke(app, ["data", "verify", name, "--data-root", str(pristine[0])])
    assert res.exit_code == 0, res.output
    assert "USABLE" in res.output and "NOT USABLE" not in res.output
    assert "DIFFERS from" in res.output      # the fixtures are not the published split


def test_verify_lists_bad_images_and_what_would_be_skipped(root, cache_dir, tmp_path):
    train_img, bad_query, _ = _break_images(root)
    res = runner.invoke(app, ["data", "verify", "darn", "--data-root", str(root), "--json", str(tmp_path / "r.json")])
    assert res.exit_code == 0, res.output          # still usable: every attribute keeps data
    assert f"{train_img}: missing" in res.output and f"{bad_query}: corrupt" in res.output
    assert "1 query rows (test)" in res.output and "1 candidate rows (test)" in res.output
    report = json.loads((tmp_path / "r.json").read_text())["reports"][0]
    assert report["usable"] and len(report["bad_images"]) == 3
    assert [t["queries_without_relevant_test"] for t in report["tasks"]][0] == 1   # the fixture's AP = 0 query


def test_verify_fails_on_label_errors_listing_each_line(root, cache_dir):
    path = root / "FashionAI" / "candidate_test.txt"
    lines = path.read_text().splitlines()
    lines[0], lines[2] = "0 0 6", "bad line here"
    path.write_text("\n".join(lines) + "\n")
    res = runner.invoke(app, ["data", "verify", "fashionai", "--data-root", str(root), "--quick"])
    assert res.exit_code == 1
    assert f"{path}:1: value 6 out of range" in res.output and f"{path}:3: expected" in res.output
    assert "NOT USABLE" in res.output


def test_verify_fails_when_an_attribute_loses_its_queries(root, cache_dir):
    ds = AsenMetaDataset(root, "DeepFashion")
    q = ds.eval_samples("test", "query")
    for i in q.image_ids[q.attributes == 2]:
        ds.image_paths("test")[int(i)].unlink()
    res = runner.invoke(app, ["data", "verify", "deepfashion", "--data-root", str(root)])
    assert res.exit_code == 1 and "'shape-related' has 0 queries" in res.output


def test_verify_bad_invocations(pristine, tmp_path):
    res = runner.invoke(app, ["data", "verify", "imagenet", "--data-root", str(pristine[0])])
    assert res.exit_code == 2 and "unknown dataset 'imagenet'" in res.output
    res = runner.invoke(app, ["data", "verify", "synth-4inc", "--data-root", str(pristine[0])])
    assert res.exit_code == 2 and "nothing to verify" in res.output
    res = runner.invoke(app, ["data", "verify", "darn", "--data-root", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "not a folder" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["data", "verify", "darn", "--data-root", str(empty)])
    assert res.exit_code == 1 and "meta.json: missing" in res.output


def test_label_file_warnings_reach_the_results(root, cache_dir):
    path = root / "FashionAI" / "query_test.txt"
    path.write_text(path.read_text() + path.read_text().splitlines()[0] + "\n")
    sc = _scenario("fashionai-4inc", root, cache_dir)
    assert sc.data_report["file_warnings"] == {"duplicate": 1}
    assert "query_test.txt" in sc.data_report["file_warning_examples"][0]


@pytest.mark.parametrize("draft", [True, False])
def test_training_and_evaluation_images_are_read_with_the_configured_jpeg_decoding(pristine, cache_dir, monkeypatch,
                                                                                    draft):
    """The training stream is Avalanche's view of a raw dataset whose transform is applied on
    top, so the decoding (draft or not) must belong to the dataset's reader, not the transform."""
    import cl_fir.data.image_dataset as image_dataset

    seen = []
    real = image_dataset.load_rgb
    monkeypatch.setattr(image_dataset, "load_rgb", lambda path, min_side=None: seen.append(min_side) or
                        real(path, min_side))
    sc = _scenario("fashionai-2inc", pristine[0], cache_dir, **{"transforms.jpeg_draft": draft})
    train, _ = sc.training_data([0])
    image, *_ = train[0]
    assert image.shape == (3, 32, 32)
    task = sc.eval_tasks[sc.increments[0].attributes[0]]
    task.queries[0]
    assert seen == [32 if draft else None] * 2
