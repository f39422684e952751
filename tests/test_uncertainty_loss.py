"""The uncertainty-regularised loss of composed retrieval (MGUR, Chen et al. 2024) against explicit loops."""

from __future__ import annotations

import math

import pytest
import torch

from cl_fir.losses import (augment_target_features, batch_classification_loss, uncertainty_gamma,
                           uncertainty_regularised_loss)


def _augment_loop(f, eps_a, eps_b, w1=1.0, w2=1.0):
    out = torch.empty_like(f)
    B, D = f.shape
    for i in range(B):
        row = [float(v) for v in f[i]]
        mean = sum(row) / D
        var_b = sum((v - mean) ** 2 for v in row) / D
        sd_u = math.sqrt(sum((v - mean) ** 2 for v in row) / (D - 1))
        for d in range(D):
            fbar = (row[d] - mean) / math.sqrt(var_b + 1e-5)
            alpha = w1 * (1 + sd_u * float(eps_a[i, d]))
            beta = w2 * (mean + sd_u * float(eps_b[i, d]))
            out[i, d] = alpha * fbar + beta
    return out


def _ce_loop(q, t):
    B = q.shape[0]
    total = 0.0
    for i in range(B):
        logits = [float(q[i] @ t[j]) for j in range(B)]
        m = max(logits)
        total += -(logits[i] - m - math.log(sum(math.exp(v - m) for v in logits)))
    return total / B


def test_augmenter_matches_the_per_row_definition():
    torch.manual_seed(0)
    f = torch.randn(3, 5) * 2 + 1
    eps = (torch.randn(3, 5), torch.randn(3, 5))
    torch.testing.assert_close(augment_target_features(f, 0.5, 2.0, eps), _augment_loop(f, *eps, 0.5, 2.0),
                               rtol=1e-5, atol=1e-5)
    f.requires_grad_(True)
    augment_target_features(f, noise=eps).sum().backward()
    assert f.grad is not None                              # gradient through the whitening only


def test_batch_classification_loss_is_diagonal_cross_entropy():
    torch.manual_seed(1)
    q, t = torch.randn(4, 3), torch.randn(4, 3)
    assert float(batch_classification_loss(q, t)) == pytest.approx(_ce_loop(q, t), rel=1e-5)


@pytest.mark.parametrize("form", ["code", "paper"])
def test_uncertainty_loss_matches_its_formula(form):
    torch.manual_seed(2)
    fs, ft = torch.randn(4, 6), torch.randn(4, 6)
    eps = (torch.randn(4, 6), torch.randn(4, 6))
    fhat = _augment_loop(ft, *eps)
    ce_u, ce = _ce_loop(fs, fhat), _ce_loop(fs, ft)
    if form == "code":
        flat = [float(v) for v in fhat.flatten()]
        m = sum(flat) / len(flat)
        s = math.sqrt(sum((v - m) ** 2 for v in flat) / (len(flat) - 1))
        l_u = 0.5 * (math.exp(-s) * ce_u + s)
    else:
        flat = [float(v) for v in ft.flatten()]
        m = sum(flat) / len(flat)
        var = sum((v - m) ** 2 for v in flat) / (len(flat) - 1)
        l_u = ce_u / (2 * var) + 0.5 * math.log(var)
    gamma = uncertainty_gamma(3, 10, gamma0=1.0)
    assert gamma == pytest.approx(math.exp(-0.3)) and uncertainty_gamma(0, 10) == 1.0
    got = uncertainty_regularised_loss(fs, ft, gamma, form=form, noise=eps)
    assert float(got) == pytest.approx(gamma * l_u + (1 - gamma) * ce, rel=1e-4)
    assert float(uncertainty_regularised_loss(fs, ft, 0.0, form=form, noise=eps)) == pytest.approx(ce, rel=1e-5)
    with pytest.raises(ValueError, match="code' or 'paper"):
        uncertainty_regularised_loss(fs, ft, 1.0, form="kendall")
