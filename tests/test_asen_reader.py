"""The ASEN-meta reader on a tiny generated dataset, and its errors on malformed files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from cl_fir.data.asen_meta import AsenMetaDataset
from cl_fir.data.image_dataset import SampleImageDataset
from cl_fir.data.synthfashion import DATASET_KEY, SynthFashionConfig, ensure_synthfashion
from cl_fir.errors import ConfigError, DataFormatError


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    cfg = SynthFashionConfig(seed=1, image_size=32, train_per_attribute=8, queries_per_attribute=8,
                             candidates_per_attribute=8)
    return ensure_synthfashion(cfg, tmp_path_factory.mktemp("pristine"))


@pytest.fixture
def root(pristine, tmp_path):
    dest = tmp_path / "data"
    shutil.copytree(pristine, dest)
    return dest


def test_reads_meta_and_tables(root):
    ds = AsenMetaDataset(root, DATASET_KEY)
    assert ds.meta.num_attributes == 8 and ds.meta.value_names is not None
    assert ds.meta.class_offsets[1] == ds.meta.num_values[0]
    train = ds.train_samples()
    assert train.image_ids.dtype == np.int64 and len(train) == 64


def test_reads_multi_pair_label_lines_as_darn_does(root):
    (root / DATASET_KEY / "label_train.txt").write_text("0 0 1 2 3 4 0\n1 1 2\n")
    train = AsenMetaDataset(root, DATASET_KEY).train_samples()
    assert train.image_ids.tolist() == [0, 0, 0, 1]
    assert train.attributes.tolist() == [0, 2, 4, 1] and train.values.tolist() == [1, 3, 0, 2]


def test_lazy_dataset_loads_images_on_access(root):
    ds = AsenMetaDataset(root, DATASET_KEY)
    table = ds.eval_samples("test", "query")
    paths = [ds.folder / f for f in ds.filenames("test")]
    data = SampleImageDataset(paths, table, ds.meta.class_offsets)
    img, cls = data[3]
    assert img.size == (32, 32)
    assert cls == ds.meta.class_offsets[table.attributes[3]] + table.values[3]
    assert data.task_labels[3] == table.attributes[3]


@pytest.mark.parametrize("content, line, expected", [
    ("0 0 1\nabc 0 1\n", 2, "as integers"),
    ("0 0 1\n1 0\n", 2, "expected 'img_id attr value"),
    ("0 0 1\n1 0 1 2\n", 2, "expected 'img_id attr value"),
    ("0 0 1\n1 0 99\n", 2, "value 99 out of range for attribute skirt_length"),
    ("0 0 1\n1 42 0\n", 2, "attribute 42 out of range"),
    ("0 0 1\n99999 0 0\n", 2, "image id 99999 out of range"),
    ("0 0 1\n-1 0 0\n", 2, "image id -1 out of range"),
])
def test_malformed_query_file_names_file_and_line(root, content, line, expected):
    path = root / DATASET_KEY / "query_test.txt"
    path.write_text(content)
    with pytest.raises(DataFormatError) as err:
        AsenMetaDataset(root, DATASET_KEY).eval_samples("test", "query")
    assert f"{path}:{line}:" in str(err.value) and expected in str(err.value)


def test_missing_and_empty_files(root):
    (root / DATASET_KEY / "candidate_test.txt").unlink()
    with pytest.raises(DataFormatError, match="candidate_test.txt: missing"):
        AsenMetaDataset(root, DATASET_KEY).eval_samples("test", "candidate")
    (root / DATASET_KEY / "query_valid.txt").write_text("\n\n")
    with pytest.raises(DataFormatError, match="query_valid.txt: no samples"):
        AsenMetaDataset(root, DATASET_KEY).eval_samples("valid", "query")
    names = root / DATASET_KEY / "filenames_valid.txt"
    names.write_text("a.png\n\nb.png\n")
    with pytest.raises(DataFormatError, match=r"filenames_valid.txt:2: empty line"):
        AsenMetaDataset(root, DATASET_KEY).filenames("valid")


def test_meta_json_problems(root, tmp_path):
    with pytest.raises(DataFormatError, match="data root does not exist"):
        AsenMetaDataset(tmp_path / "nowhere", DATASET_KEY)
    with pytest.raises(DataFormatError, match="no entry 'FashionAI'"):
        AsenMetaDataset(root, "FashionAI")
    (root / "meta.json").write_text("{not json")
    with pytest.raises(DataFormatError, match="meta.json: not valid JSON"):
        AsenMetaDataset(root, DATASET_KEY)
    (root / "meta.json").write_text(json.dumps({DATASET_KEY: {"ATTRIBUTES": ["a"]}}))
    with pytest.raises(DataFormatError, match="ATTRIBUTES_NUM"):
        AsenMetaDataset(root, DATASET_KEY)
    (root / "meta.json").unlink()
    with pytest.raises(DataFormatError, match="meta.json: missing"):
        AsenMetaDataset(root, DATASET_KEY)


def test_meta_json_inside_the_dataset_folder_is_accepted(root):
    (root / "meta.json").rename(root / DATASET_KEY / "meta.json")
    assert AsenMetaDataset(root, DATASET_KEY).meta.num_attributes == 8


def test_bad_split_and_role(root):
    ds = AsenMetaDataset(root, DATASET_KEY)
    with pytest.raises(ConfigError):
        ds.eval_samples("train", "query")
    with pytest.raises(ConfigError):
        ds.eval_samples("test", "gallery")
