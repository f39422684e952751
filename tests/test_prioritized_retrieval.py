"""MODC's prioritised retrieval: the ranking against an explicit two-list oracle, its
invariants, pseudo labels from stored centroids, and runs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cl_fir.errors import ConfigError
from cl_fir.evaluation.evaluator import priority_inputs
from cl_fir.evaluation.retrieval import retrieval_scores
from cl_fir.report.outputs import write_comparison
from cl_fir.report.run_dir import load_run
from cl_fir.runner import execute_run, resolve_config, resume_run


def _unit(rng, n, d=4):
    x = rng.normal(size=(n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _two_list_ap(q, ql, c, cl, qclass, ctop):
    """Priority candidates by similarity, then the rest by similarity; AP over the full list."""
    out = []
    for i in range(len(q)):
        sims = c @ q[i]
        first = [j for j in range(len(c)) if qclass[i] in ctop[j]]
        rest = [j for j in range(len(c)) if qclass[i] not in ctop[j]]
        order = sorted(first, key=lambda j: (-sims[j], j)) + sorted(rest, key=lambda j: (-sims[j], j))
        rel = np.array([cl[j] == ql[i] for j in order], dtype=float)
        hits = np.cumsum(rel)
        out.append((hits / np.arange(1, len(rel) + 1) * rel).sum() / rel.sum() if rel.sum() else 0.0)
    return np.array(out)


@pytest.mark.parametrize("seed", range(4))
def test_score_offset_ranking_equals_the_two_list_ranking(seed):
    rng = np.random.default_rng(seed)
    q, c = _unit(rng, 7), _unit(rng, 30)
    ql, cl = rng.integers(3, size=7), rng.integers(3, size=30)
    qclass = rng.integers(3, size=7)
    ctop = np.stack([rng.permutation(3)[:2] for _ in range(30)])
    got = retrieval_scores(q, ql, c, cl, priority=(qclass, ctop), chunk_elements=60)["ap"][None]
    np.testing.assert_allclose(got, _two_list_ap(q, ql, c, cl, qclass, ctop), atol=1e-12)


def test_invariants_all_clusters_is_plain_and_perfect_clusters_give_100():
    rng = np.random.default_rng(5)
    q, c = _unit(rng, 6), _unit(rng, 20)
    ql, cl = rng.integers(3, size=6), rng.integers(3, size=20)
    everything = np.tile(np.arange(3), (20, 1))
    plain = retrieval_scores(q, ql, c, cl)["ap"][None]
    np.testing.assert_allclose(retrieval_scores(q, ql, c, cl, priority=(ql, everything))["ap"][None], plain)
    perfect = retrieval_scores(q, ql, c, cl, priority=(ql, cl[:, None]))["ap"][None]
    np.testing.assert_allclose(perfect, 1.0)


def test_pseudo_labels_come_from_the_nearest_valid_centroid():
    centroids = torch.eye(3)
    valid = torch.tensor([True, False, True])
    q = torch.tensor([[0.1, 0.9, 0.0], [0.0, 0.2, 0.8]])      # nearest: invalid 1 -> 0, then 2
    c = torch.tensor([[0.0, 1.0, 0.5], [1.0, 0.0, 0.0]])
    qclass, top, acc = priority_inputs(q, c, [0, 1], centroids, valid, "pseudo", 2)
    assert qclass.tolist() == [0, 2] and acc == 50.0
    assert {tuple(sorted(t)) for t in top.tolist()} == {(0, 2)}  # only valid clusters, k capped at 2
    known, _, acc_known = priority_inputs(q, c, [0, 1], centroids, valid, "known", 1)
    assert known.tolist() == [0, 1] and acc_known == acc        # accuracy does not depend on the mode


def test_runs_record_prioritized_metrics_beside_plain_and_resume_exactly(tiny_scenario, tmp_path):
    kw = dict(overrides={"eval.mode": "prioritized", "eval.query_labels": "known", "eval.prio_topk": 1}, seed=2)
    full = execute_run(resolve_config("finetune", str(tiny_scenario), output_dir=str(tmp_path / "a"), **kw))
    for name in ("matrix_prio_known_top1_map_all.csv", "matrix_pl_acc.csv", "matrix.csv"):
        assert (full / name).is_file()
    split = execute_run(resolve_config("finetune", str(tiny_scenario), output_dir=str(tmp_path / "b"), **kw),
                        stop_after=1)
    resume_run(split)
    for name in ("matrix_prio_known_top1_map_all.csv", "matrix.csv"):
        assert (split / name).read_text() == (full / name).read_text()
    rows, markdown = write_comparison([load_run(full)], tmp_path / "cmp")[:2]
    table = markdown.split("Prioritised retrieval")[1]
    assert "| prio_known_top1 | yes |" in table       # known query labels are flagged as test-time information
    final = rows[0]["prioritized"]["prio_known_top1"]["final"][0]
    assert f"{final:.2f}" in table


def test_prioritized_mode_needs_attribute_values(tmp_path, cache_dir):
    from test_composed_family import TINY_CIR

    from cl_fir.runner import build_loop

    with pytest.raises(ConfigError, match="eval.mode .--eval-mode.: expected plain or prioritized"):
        resolve_config("finetune", "synth-2inc", {"eval.mode": "modc"})
    composed = tmp_path / "cir.toml"
    composed.write_text(TINY_CIR.replace("{gallery}", "split").replace("{groups}", "3"))
    with pytest.raises(ConfigError, match="prioritized needs attribute values"):
        build_loop(resolve_config("finetune", str(composed), {"eval.mode": "prioritized"}))
