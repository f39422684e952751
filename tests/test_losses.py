"""Doublet InfoNCE against an explicit per-row loop."""

from __future__ import annotations

import math

import pytest

import torch
import torch.nn.functional as F

from cl_fir.losses import doublet_infonce


def explicit_infonce(a, p, labels=None, t=0.3):
    z = torch.cat([a, p]).double()
    n, B = z.shape[0], a.shape[0]
    lab = None if labels is None else torch.cat([labels, labels])
    total = 0.0
    for i in range(n):
        partner = (i + B) % n
        terms = []
        for j in range(n):
            if j == i:
                continue
            if lab is not None and j != partner and lab[j] == lab[i]:
                continue
            terms.append(float(z[i] @ z[j]) / t)
        pos = float(z[i] @ z[partner]) / t
        total += -(pos - math.log(sum(math.exp(v) for v in terms)))
    return total / n


def embeddings(B=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(B, d, generator=g), dim=1)
    p = F.normalize(torch.randn(B, d, generator=g), dim=1)
    return a, p


def test_matches_explicit_loop_without_labels():
    a, p = embeddings()
    assert float(doublet_infonce(a, p, temperature=0.3)) == pytest.approx(explicit_infonce(a, p), abs=1e-5)


def test_label_aware_removes_same_class_negatives():
    a, p = embeddings(seed=1)
    labels = torch.tensor([0, 1, 0, 2, 1, 0])
    got = float(doublet_infonce(a, p, labels, temperature=0.1))
    assert got == pytest.approx(explicit_infonce(a, p, labels, t=0.1), abs=1e-5)
    assert got != pytest.approx(float(doublet_infonce(a, p, temperature=0.1)), abs=1e-4)


def test_gradients_flow_and_loss_is_low_for_matched_pairs():
    a, p = embeddings(B=4, d=8, seed=2)
    a.requires_grad_(True)
    loss = doublet_infonce(a, a.detach().clone(), temperature=0.1)
    loss.backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()
    assert float(doublet_infonce(torch.eye(4), torch.eye(4), temperature=0.1)) < 0.01


@pytest.mark.parametrize("label_aware", [False, True])
def test_selected_rows_give_the_loss_of_those_doublets_alone(label_aware):
    """The masked loss equals the explicit loop over the selected doublets, and so do the
    gradients (zero for the rows left out)."""
    for mask in ([1, 0, 1, 1, 0, 1, 0], [0, 0, 0, 0, 0, 0, 1], [1] * 7):
        a, p = embeddings(B=7, seed=4)
        labels = torch.tensor([0, 1, 0, 2, 1, 0, 2]) if label_aware else None
        rows = torch.tensor(mask, dtype=torch.bool)
        a.requires_grad_(True)
        got = doublet_infonce(a, p, labels, 0.2, rows=rows)
        want = explicit_infonce(a.detach()[rows], p[rows], None if labels is None else labels[rows], t=0.2)
        assert got.item() == pytest.approx(want, abs=1e-5)
        got.backward()
        selected = a.detach()[rows].clone().requires_grad_(True)
        doublet_infonce(selected, p[rows], None if labels is None else labels[rows], 0.2).backward()
        torch.testing.assert_close(a.grad[rows], selected.grad)
        assert not a.grad[~rows].any()


def test_no_selected_row_gives_zero_and_finite_gradients():
    a, p = embeddings(B=3, seed=5)
    a.requires_grad_(True)
    loss = doublet_infonce(a, p, torch.tensor([0, 0, 1]), 0.3, rows=torch.zeros(3, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and not a.grad.any()
