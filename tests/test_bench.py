"""The benchmarks run and report what they claim (timings are never asserted)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from cl_fir.bench import (bench_loader, bench_map_gallery, bench_train, bench_train_ablation, default_worker_counts,
                          naive_average_precision)
from cl_fir.cli import app
from cl_fir.evaluation.retrieval import average_precision


def test_naive_reference_equals_the_harness_map():
    import numpy as np

    rng = np.random.default_rng(0)
    q, c = rng.normal(size=(7, 4)).astype(np.float32), rng.normal(size=(30, 4)).astype(np.float32)
    ql, cl = rng.integers(3, size=7), rng.integers(3, size=30)
    np.testing.assert_allclose(average_precision(q, ql, c, cl), naive_average_precision(q, ql, c, cl), atol=1e-12)


def test_train_benchmark_runs_both_loops_on_the_same_model():
    res = bench_train("test_resnet", image_size=32, batch_size=4, steps=1, repeats=1, device="cpu")
    assert res["images_per_step"] == 8 and res["harness_images_per_s"] > 0 and res["bare_images_per_s"] > 0
    assert res["precision"] == "fp32"


def test_train_ablation_times_every_variant_against_bare():
    res = bench_train_ablation("test_resnet", image_size=32, batch_size=4, steps=1, repeats=2, device="cpu")
    names = [r["variant"] for r in res["rows"]]
    assert names[0] == "bare" and "harness" in names and len(names) == 6
    assert res["rows"][0]["overhead_vs_bare"] == 0.0 and all(r["images_per_s"] > 0 for r in res["rows"])


def test_loader_benchmark_compares_decoders_and_workers():
    res = bench_loader(images=8, source_sizes=(40, 80), crop=32, workers=(0, 1), batch_size=4, device="cpu")
    assert {(r["source_size"], r["decoder"], r["workers"]) for r in res["rows"]} == {
        (s, d, w) for s in (40, 80) for d in ("pil", "pil_draft", "pil_draft_uint8", "torchvision", "device") for w in (0, 1)}
    assert all(r["images_per_s"] > 0 for r in res["rows"])


def test_gallery_benchmark_gives_equal_values_for_every_chunk_size():
    res = bench_map_gallery(queries=50, candidates=300, dim=8, values=4, chunks=(100, 1000, 20000), device="cpu")
    assert [r["chunk_elements"] for r in res["rows"]] == [100, 1000, 20000]
    assert all(r["max_abs_difference_vs_first"] < 1e-6 for r in res["rows"])
    assert len({round(r["map"], 9) for r in res["rows"]}) == 1 and res["device"] == "cpu"


def test_worker_counts_double_up_to_the_cores():
    counts = default_worker_counts()
    assert counts[:3] == (0, 1, 2) and list(counts) == sorted(set(counts))


def test_bench_cli_writes_json(tmp_path):
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", "--only", "train", "--backbone", "test_resnet", "--image-size", "32",
                                   "--batch-size", "4", "--steps", "1", "--output", str(out)])
    assert res.exit_code == 0, res.output
    assert "harness overhead" in res.output
    assert json.loads(out.read_text())["benchmarks"][0]["name"] == "train_step_throughput"
    res = CliRunner().invoke(app, ["bench", "--only", "gpu"])
    assert res.exit_code != 0 and "--only" in res.output
