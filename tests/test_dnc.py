"""Divide and Conquer: the head against explicit computations, division and matching on
synthetic clusters with a known answer, cluster-constrained batches, and real runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cl_fir.engine.clustering import (bisect_clusters, centroids_of, cluster_with_retries, kmeans, relabel_by_centroids,
                               relabel_by_overlap, valid_clusters)
from cl_fir.data.asen_meta import SampleTable
from cl_fir.data.samplers import DoubletBatchSampler, MixedDoubletSampler
from cl_fir.errors import ConfigError
from cl_fir.models.dnc_head import EVAL, UNMASKED, DivideAndConquerHead
from cl_fir.runner import execute_run, resolve_config, resume_run
from cl_fir.strategy import parameter_groups
from conftest import write_scenario


def _blobs(centres: np.ndarray, per: int, noise: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    truth = np.repeat(np.arange(len(centres)), per)
    return centres[truth] + noise * rng.normal(size=(len(truth), centres.shape[1])), truth


def _same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    return len(set(zip(a.tolist(), b.tolist()))) == len(set(a.tolist())) == len(set(b.tolist()))


# ------------------------------------------------------------------ clustering


def test_kmeans_recovers_separated_clusters():
    x, truth = _blobs(np.eye(8)[:4] * 10, per=30, noise=0.3)
    labels, centroids = kmeans(x, 4, seed=1)
    assert _same_partition(labels, truth) and centroids.shape == (4, 8)
    assert (kmeans(x[:3], 5, seed=1)[0] < 3).all()          # k capped at the number of rows


def test_valid_clusters_against_a_hand_count():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 2, 2])
    values = np.array([5, 5, 6, 6, 5, 5, 6, 1, 1, 1, 2])
    # cluster 0: values 5 and 6 twice each -> valid; 1: only value 5 twice; 2: only value 1 repeated
    assert valid_clusters(labels, values, 3).tolist() == [True, False, False]


def test_cluster_with_retries_prefers_clusterings_where_every_cluster_can_train():
    x, truth = _blobs(np.eye(6)[:3] * 10, per=12, noise=0.3)
    values = np.tile(np.arange(4), 9)                       # every blob holds 4 values x 3 rows
    labels = cluster_with_retries(x, values, 3, seed=0)
    assert valid_clusters(labels, values, 3).all() and _same_partition(labels, truth)


@pytest.mark.parametrize("cost", ["symdiff", "iou"])
def test_relabel_by_overlap_undoes_a_permutation_and_follows_the_majority(cost):
    previous = np.repeat(np.arange(4), 10)
    perm = np.array([2, 0, 3, 1])
    assert (relabel_by_overlap(perm[previous], previous, 4, cost) == previous).all()
    moved = perm[previous].copy()
    moved[[0, 1, 10]] = moved[[20, 20, 30]]                 # a few rows change cluster
    relabelled = relabel_by_overlap(moved, previous, 4, cost)
    assert (relabelled == previous).mean() >= 37 / 40


def test_symdiff_and_iou_matchings_can_differ():
    # new cluster 0 = {0..9}, 1 = {10..11}; previous 0 = {0..1}, 1 = {2..11}
    new = np.array([0] * 10 + [1] * 2)
    prev = np.array([0] * 2 + [1] * 10)
    # symmetric differences: (0,0) 8, (0,1) 10, (1,0) 4, (1,1) 8 -> identity 16 vs swap 14: swap
    assert relabel_by_overlap(new, prev, 2, "symdiff").tolist() == [1] * 10 + [0] * 2
    # IoU: (0,0) 2/10, (0,1) 8/12, (1,0) 0, (1,1) 2/10 -> identity 0.4 vs swap 0.67: swap too
    assert relabel_by_overlap(new, prev, 2, "iou").tolist() == [1] * 10 + [0] * 2
    with pytest.raises(ValueError, match="symdiff"):
        relabel_by_overlap(new, prev, 2, "jaccard")


def test_relabel_by_centroids_matches_stored_centroids():
    x, truth = _blobs(np.eye(5)[:3] * 10, per=20, noise=0.2)
    stored = centroids_of(x, truth, 3)
    assert np.allclose(np.linalg.norm(stored, axis=1), 1)
    assert (relabel_by_centroids(np.array([1, 2, 0])[truth], x, stored) == truth).all()


def test_bisection_splits_each_cluster_into_its_two_blobs():
    # four blobs: 0 and 1 close together, 2 and 3 close together, the pairs far apart
    centres = np.array([[10, 0, 0, 0], [10, 4, 0, 0], [-10, 0, 0, 0], [-10, 0, 4, 0]], dtype=float)
    x, truth = _blobs(centres, per=20, noise=0.2)
    values = np.tile(np.arange(5), 16)
    parents = truth // 2
    children, split = bisect_clusters(x, parents, values, 2, seed=3)
    assert split.all() and (children // 2 == parents).all() and _same_partition(children, truth)
    # a cluster that cannot be split into two trainable halves stays whole in child 2c
    children, split = bisect_clusters(x, parents, np.arange(80), 2, seed=3)   # every value unique
    assert not split.any() and (children == 2 * parents).all()


# ------------------------------------------------------------------ head


def _head(**kw):
    torch.manual_seed(0)
    return DivideAndConquerHead(8, num_attributes=3, embed_dim=6, attr_dim=4, max_clusters=4, **kw)


def test_head_applies_the_mask_of_each_sample_cluster():
    head = _head()
    with torch.no_grad():
        head.masks.copy_(torch.randn_like(head.masks))
    head.num_clusters[:] = torch.tensor([2, 4, 1])
    fmap, attrs = torch.randn(5, 8, 3, 3), torch.tensor([0, 1, 1, 2, 0])
    groups = torch.tensor([1, 3, UNMASKED, 0, EVAL])
    e = head.base(fmap, attrs)
    expected = [e[0] * F.relu(head.masks[0, 1]), e[1] * F.relu(head.masks[1, 3]), e[2],
                e[3] * F.relu(head.masks[2, 0]), e[4] * F.relu(head.masks[0, :2]).sum(0)]
    torch.testing.assert_close(head(fmap, attrs, groups), F.normalize(torch.stack(expected), dim=1))
    torch.testing.assert_close(head(fmap, attrs), head(fmap, attrs, torch.full_like(attrs, EVAL)))
    code_eval = _head(eval_embedding="none")
    code_eval.load_state_dict(head.state_dict())
    torch.testing.assert_close(code_eval(fmap, attrs), F.normalize(e, dim=1))


def test_decorrelation_loss_is_the_mean_pairwise_cosine_of_relu_masks():
    head = _head(decorrelation_weight=0.5)
    with torch.no_grad():
        head.masks.copy_(torch.randn_like(head.masks))
    head.num_clusters[:] = torch.tensor([3, 1, 4])
    expected = []
    for a, k in ((0, 3), (2, 4)):                         # attribute 1 has one mask: no term
        m = [F.relu(head.masks[a, i]) for i in range(k)]
        pairs = [F.cosine_similarity(m[i], m[j], dim=0) for i in range(k) for j in range(k) if i != j]
        expected.append(sum(pairs) / len(pairs))
    got = head.decorrelation_loss(torch.tensor([0, 1, 2, 2]))
    torch.testing.assert_close(got, sum(expected) / 2)
    rows = torch.tensor([True, True, False, False])                # only these rows' attributes count
    torch.testing.assert_close(head.decorrelation_loss(torch.tensor([0, 1, 2, 2]), rows), expected[0])
    assert head.decorrelation_loss(torch.tensor([0, 1, 2, 2]), torch.zeros(4, dtype=torch.bool)).item() == 0.0
    head.train()
    head(torch.randn(4, 8, 3, 3), torch.tensor([0, 1, 2, 2]), torch.tensor([0, 0, 1, 2]))
    torch.testing.assert_close(head.aux_losses[0], 0.5 * got)
    head.aux_losses.clear()
    head.conquering = True                                   # conquering: summed masks, frozen, no term
    out = head(torch.randn(4, 8, 3, 3), torch.tensor([0, 1, 2, 2]), torch.tensor([0, 0, 1, 2]))
    assert head.aux_losses == []
    out.sum().backward()
    assert head.masks.grad is None


def test_division_copies_each_parent_into_its_two_children():
    head = _head()
    with torch.no_grad():
        head.masks.copy_(torch.randn_like(head.masks))
    head.num_clusters[1] = 2
    before = head.masks[1].detach().clone()
    head.divide(1)
    assert int(head.num_clusters[1]) == 4
    for c in range(2):
        torch.testing.assert_close(head.masks[1, 2 * c], before[c])
        torch.testing.assert_close(head.masks[1, 2 * c + 1], before[c])
    with pytest.raises(ValueError, match="max_clusters"):
        head.divide(1)


def test_masks_get_their_own_learning_rate():
    head = _head(mask_lr_multiplier=100.0)
    groups = parameter_groups(head.parameters(), lr=1e-3)
    by_lr = {g["lr"]: g["params"] for g in groups}
    assert set(by_lr) == {1e-3, 1e-3 * 100} and by_lr[1e-3 * 100] == [head.masks]


def test_bad_head_options_are_named():
    with pytest.raises(ValueError, match="relabel"):
        _head(relabel="hungarian")
    with pytest.raises(ValueError, match="base must be one of"):
        _head(base="dnc")


# ------------------------------------------------------------------ batches


def _table(n_attr=2, per=40, n_values=4):
    attrs = np.repeat(np.arange(n_attr), per)
    values = np.tile(np.arange(n_values), n_attr * per // n_values)
    return SampleTable(np.arange(len(attrs)), attrs, values)


def test_grouped_batches_come_from_one_cluster():
    table = _table()
    row_group = np.arange(len(table)) % 3                  # three clusters, all trainable
    row_group[:5] = -1                                     # unassigned rows are never drawn
    sampler = DoubletBatchSampler(table, 6, 60, seed=0)
    schedule = np.array([2, 0, 1] * 3 + [2])
    batches = list(sampler.with_groups(row_group, schedule))
    assert len(batches) == len(sampler) == 10
    for g, batch in zip(schedule, batches):
        idx = [i for i, _ in batch]
        assert {t for _, t in batch} == {g} and (row_group[idx] == g).all()
        anchors, positives = idx[:6], idx[6:]
        assert (table.values[anchors] == table.values[positives]).all()
        assert all(a != p for a, p in zip(anchors, positives))
    assert list(sampler.with_groups(row_group, schedule)) == batches       # seeded


def test_a_sampler_without_doublets_in_the_cluster_falls_back_and_says_so():
    table = _table()
    row_group = np.zeros(len(table), dtype=np.int64)
    row_group[40:] = 1                                     # attribute 1 lives in cluster 1 only
    new = DoubletBatchSampler(table, 4, 8, seed=0, rows=np.arange(40, 80))
    old = DoubletBatchSampler(table, 2, 4, seed=1, rows=np.arange(0, 40))
    mixed = MixedDoubletSampler([new, old])
    assert mixed.can_draw(row_group, 1) and not mixed.can_draw(row_group, 0)
    batch = next(iter(mixed.with_groups(row_group, np.array([1, 1]))))
    tags = dict(batch)
    assert len(batch) == 12
    assert all(tags[i] == 1 for i in tags if i >= 40) and all(tags[i] == EVAL for i in tags if i < 40)


# ------------------------------------------------------------------ runs


@pytest.fixture(scope="module")
def dnc_scenario(tmp_path_factory, cache_dir):
    return write_scenario(tmp_path_factory.mktemp("dnc"), '[["skirt_length", "sleeve_length"], ["coat_length", "pant_length"]]',
                          **{"train_per_attribute = 16": "train_per_attribute = 48", "epochs = 1": "epochs = 3"})


DNC = {"model.head": "dnc", "model.head_kwargs": {"division_interval": 1, "max_clusters": 4, "kmeans_trials": 3},
       "train.checkpoint_every": 1}


@pytest.mark.parametrize("strategy", ["finetune", "replay", "mcl_fir_isolated"])
def test_dnc_runs_divide_and_resume_exactly_after_a_crash(strategy, dnc_scenario, tmp_path, monkeypatch):
    from cl_fir.engine.loop import TrainingLoop

    kw = dict(overrides=DNC, seed=2)
    full = execute_run(resolve_config(strategy, str(dnc_scenario), output_dir=str(tmp_path / "full"), **kw))
    original, calls = TrainingLoop.training_step, {"n": 0}

    def crashing_step(self, batch):
        calls["n"] += 1
        if calls["n"] == 10:           # increment 2, epoch 2 (after its first division), step 2 of 2
            raise RuntimeError("simulated crash")
        return original(self, batch)

    monkeypatch.setattr(TrainingLoop, "training_step", crashing_step)
    with pytest.raises(RuntimeError, match="simulated"):
        execute_run(resolve_config(strategy, str(dnc_scenario), output_dir=str(tmp_path / "crash"), **kw))
    monkeypatch.setattr(TrainingLoop, "training_step", original)
    crashed = tmp_path / "crash" / "tiny" / strategy / "seed2"
    resume_run(crashed)
    assert (crashed / "matrix.csv").read_text() == (full / "matrix.csv").read_text()
    checkpoint = torch.load(full / "checkpoints" / "increment_2.pt", weights_only=False)
    state = checkpoint["loop"]["model"]
    clusters = torch.stack([v for k, v in state.items() if k.endswith("num_clusters")]).amax(dim=0)
    assert [int(clusters[a]) for a in _attributes(full)[2:]] == [4, 4]   # increment 2's attributes divided twice
    cost = json.loads((full / "cost.json").read_text())["increments"]
    assert all(c["extra_forward_images"] > 0 for c in cost)    # the clustering passes are counted


def _attributes(run_dir) -> list[int]:
    return [t["attribute"] for t in json.loads((run_dir / "run.json").read_text())["tasks"]]


def test_dnc_with_mcl_fir_divides_per_head(dnc_scenario, tmp_path):
    run = execute_run(resolve_config("mcl_fir", str(dnc_scenario), output_dir=str(tmp_path), overrides=DNC, seed=1))
    state = torch.load(run / "checkpoints" / "increment_2.pt", weights_only=False)["loop"]["model"]
    attrs = _attributes(run)
    assert [int(state["heads.0.num_clusters"][a]) for a in attrs] == [4, 4, 0, 0]   # each head divides its own
    assert [int(state["heads.1.num_clusters"][a]) for a in attrs] == [0, 0, 4, 4]


def test_bad_dnc_settings_are_config_errors(dnc_scenario):
    from cl_fir.runner import build_loop

    with pytest.raises(ConfigError, match="model.head_kwargs for head 'dnc'.*cluster_features"):
        build_loop(resolve_config("finetune", str(dnc_scenario), {"model.head": "dnc",
                                                                   "model.head_kwargs": {"cluster_features": "x"}}))
