"""Readers of FashionIQ, Shoes and Fashion200k on tiny copies in their distributed formats."""

from __future__ import annotations

import json

import pytest

from cl_fir.data.composed import (modification_text, normalise_caption, read_fashion200k, read_fashioniq, read_shoes,
                                  shoes_category)
from cl_fir.data.problems import ProblemLog
from cl_fir.errors import DataFormatError


def _fashioniq(root, shared=("B0SHARED",)):
    (root / "captions").mkdir(parents=True)
    (root / "image_splits").mkdir()
    (root / "images").mkdir()
    splits = {"dress": ["B0D1", "B0D2", "B0D3"], "shirt": ["B0S1", "B0S2", *shared], "toptee": ["B0T1", "B0T2", *shared]}
    for cat, keys in splits.items():
        (root / "image_splits" / f"split.{cat}.val.json").write_text(json.dumps(keys))
        caps = [{"target": keys[0], "candidate": keys[1], "captions": ["is red", "has long sleeves"]},
                {"target": keys[2], "candidate": keys[0], "captions": ["is shorter", "no pattern"]}]
        (root / "captions" / f"cap.{cat}.val.json").write_text(json.dumps(caps))
        (root / "captions" / f"cap.{cat}.test.json").write_text(json.dumps([{"candidate": keys[0],
                                                                             "captions": ["a", "b"]}]))
        (root / "image_splits" / f"split.{cat}.test.json").write_text(json.dumps(keys))
    return root


def test_fashioniq_queries_galleries_and_the_shared_images(tmp_path):
    root = _fashioniq(tmp_path / "fashionIQ")
    val = read_fashioniq(root, "val")
    assert len(val.queries) == 6 and val.categories() == ["dress", "shirt", "toptee"]
    q = val.queries[0]
    assert (q.reference, q.targets, q.texts, q.category) == ("B0D2", ["B0D1"], ["is red", "has long sleeves"], "dress")
    assert val.galleries["dress"] == ["B0D1", "B0D2", "B0D3"]
    assert val.counts["shared_images"] == 1
    assert val.image_path["B0D1"] == root / "images" / "B0D1.jpg"
    dropped = read_fashioniq(root, "val", shared_images="drop")
    assert "B0SHARED" not in dropped.galleries["shirt"] + dropped.galleries["toptee"]
    assert dropped.counts["queries_dropped_shared"] == 2 and len(dropped.queries) == 4
    vgal = read_fashioniq(root, "val", gallery="val", categories=("dress",))
    assert vgal.galleries["dress"] == ["B0D2", "B0D1", "B0D3"]          # references and targets of the file
    test = read_fashioniq(root, "test", categories=("dress",))
    assert test.queries[0].targets == []                                 # no target in the test split


def test_fashioniq_bad_entries_name_file_and_entry(tmp_path):
    root = _fashioniq(tmp_path / "fashionIQ")
    path = root / "captions" / "cap.dress.val.json"
    path.write_text(json.dumps([{"target": "B0D1", "candidate": "B0D2", "captions": ["x"]},
                                {"target": "B0D1", "captions": ["x"]}]))
    with pytest.raises(DataFormatError, match=r"cap\.dress\.val\.json: entry 2: expected an object with a string"):
        read_fashioniq(root, "val", categories=("dress",))
    path.write_text(json.dumps([{"candidate": "B0D2", "captions": ["x"]}]))
    with pytest.raises(DataFormatError, match="no 'target' .only the test split has none."):
        read_fashioniq(root, "val", categories=("dress",))
    path.write_text("{not json")
    log = ProblemLog(collect=True)
    read_fashioniq(root, "val", categories=("dress",), problems=log)
    assert log.errors and "not valid JSON" in log.errors[0].message


def _shoes(root):
    (root / "attributedata" / "womens_boots" / "0").mkdir(parents=True)
    (root / "train_im_names.txt").write_text("img_womens_boots_1.jpg\nimg_womens_boots_2.jpg\nimg_womens_clogs_3.jpg\n")
    (root / "eval_im_names.txt").write_text("img_womens_boots_4.jpg\nimg_womens_rain_boots_5.jpg\n")
    caps = [{"ImageName": "img_womens_boots_2.jpg", "ReferenceImageName": "img_womens_boots_1.jpg",
             "RelativeCaption": "is taller"},
            {"ImageName": "img_womens_clogs_3.jpg", "ReferenceImageName": "img_womens_boots_1.jpg",
             "RelativeCaption": "is a clog"},
            {"ImageName": "img_womens_rain_boots_5.jpg", "ReferenceImageName": "img_womens_boots_4.jpg",
             "RelativeCaption": "is rubber"},
            {"ImageName": "img_womens_boots_4.jpg", "ReferenceImageName": "img_womens_boots_1.jpg",
             "RelativeCaption": "crosses the splits"}]
    (root / "relative_captions_shoes.json").write_text(json.dumps(caps))
    return root


def test_shoes_triplets_by_target_category_and_split(tmp_path):
    root = _shoes(tmp_path / "shoes")
    train = read_shoes(root, "train")
    assert [(q.reference, q.targets[0], q.category) for q in train.queries] == [
        ("img_womens_boots_1.jpg", "img_womens_boots_2.jpg", "womens_boots"),
        ("img_womens_boots_1.jpg", "img_womens_clogs_3.jpg", "womens_clogs")]
    assert train.counts["triplets_crossing_splits"] == 1
    ev = read_shoes(root, "eval")
    assert ev.queries[0].category == "womens_rain_boots" and ev.galleries == {"*": ["img_womens_boots_4.jpg",
                                                                                  "img_womens_rain_boots_5.jpg"]}
    assert ev.image_path["img_womens_boots_4.jpg"] == root / "attributedata" / "womens_boots" / "0" / \
        "img_womens_boots_4.jpg"
    assert shoes_category("img_womens_high_heels_813.jpg") == "womens_high_heels"
    (root / "eval_im_names.txt").write_text("boots_4.jpg\n")
    with pytest.raises(DataFormatError, match=r"eval_im_names\.txt:1: expected a name like img_womens_"):
        read_shoes(root, "eval")


def _f200k(root):
    (root / "labels").mkdir(parents=True)
    train = ["women/dresses/casual/1/1_0.jpeg\t0.9\tgreen linen dress",
             "women/dresses/casual/2/2_0.jpeg\t0.8\tred linen dress",
             "women/dresses/casual/3/3_0.jpeg\t0.7\tred silk dress",
             "women/dresses/casual/4/4_0.jpeg\t0.7\tblue cotton a-line dress"]
    (root / "labels" / "dress_train_detect_all.txt").write_text("\n".join(train) + "\n")
    test = ["women/dresses/casual/5/5_0.jpeg\t0.9\tblack wool dress.",
            "women/dresses/casual/6/6_0.jpeg\t0.9\twhite wool dress.",
            "women/dresses/casual/7/7_0.jpeg\t0.9\twhite wool dress."]
    (root / "labels" / "dress_test_detect_all.txt").write_text("\n".join(test) + "\n")
    (root / "test_queries.txt").write_text("women/dresses/casual/5/5_0.jpeg women/dresses/casual/6/6_0.jpeg\n")
    return root


def test_fashion200k_queries_texts_and_caption_equal_positives(tmp_path):
    root = _f200k(tmp_path / "fashion200k")
    test = read_fashion200k(root, "test", categories=("dress",))
    (q,) = test.queries
    assert q.texts == ["replace black with white"]
    assert q.targets == ["women/dresses/casual/6/6_0.jpeg", "women/dresses/casual/7/7_0.jpeg"]  # same caption
    assert len(test.galleries["*"]) == 3
    train = read_fashion200k(root, "train", categories=("dress",))
    pairs = {(q.reference.split("/")[3], q.texts[0]) for q in train.queries}
    assert pairs == {("1", "replace green with red"), ("2", "replace red with green"),
                     ("2", "replace linen with silk"), ("3", "replace silk with linen")}
    assert normalise_caption("a & b.") == "a andmark bdotmark"
    assert modification_text("red silk dress", "blue cotton dress") is None
    (root / "labels" / "dress_test_detect_all.txt").write_text("women/x.jpeg\tnot-a-score\tdress\n")
    with pytest.raises(DataFormatError, match=r"dress_test_detect_all\.txt:1: detection score 'not-a-score'"):
        read_fashion200k(root, "test", categories=("dress",))


def test_data_verify_on_fashioniq_reports_usable_categories_and_bad_images(tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from cl_fir.cli import app

    root = _fashioniq(tmp_path / "data" / "fashionIQ", shared=("B0X",))
    for cat in ("dress", "shirt", "toptee"):
        for part in ("split", "cap"):
            src = root / ("image_splits" if part == "split" else "captions") / f"{part}.{cat}.val.json"
            src.with_name(src.name.replace(".val.", ".train.")).write_text(src.read_text())
    keys = {k for f in (root / "image_splits").glob("*.json") for k in json.loads(f.read_text())}
    for k in keys:
        Image.new("RGB", (8, 8), (200, 10, 10)).save(root / "images" / f"{k}.jpg")
    (root / "images" / "B0D3.jpg").write_bytes(b"not an image")
    res = CliRunner().invoke(app, ["data", "verify", "fashioniq", "--data-root", str(tmp_path / "data"),
                                   "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 0, res.output
    assert "captions/cap.dress.val.json" in res.output and "DIFFERS from 2,017" in res.output
    assert "1 bad" in res.output and "val queries" in res.output
    assert "USABLE" in res.output
    (root / "captions" / "cap.shirt.val.json").write_text("[]")
    res = CliRunner().invoke(app, ["data", "verify", "fashioniq", "--data-root", str(tmp_path / "data"),
                                   "--cache-dir", str(tmp_path / "cache")])
    assert res.exit_code == 1 and "category 'shirt' has no usable val queries" in res.output
