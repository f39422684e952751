"""How much the input distribution shifts from increment to increment.

Class-incremental fashion retrieval differs from a fixed-input setting in how much the
images themselves change between increments: FashionAI's skirt-length images are skirts
and dresses, its lapel images close-ups of coats. A benchmark whose increments share one
image distribution flatters data-free distillation (every new image also shows the old
attributes). ``cl-fir data shift SCENARIO`` measures the shift with a **domain
classifier**: the training images of two increments are embedded by the scenario's
starting backbone (globally average-pooled feature map, no augmentation), and a logistic
regression tells them apart; its accuracy, by stratified 5-fold cross-validation on equal
numbers of images per increment, is 50% when the two increments' images are
indistinguishable and 100% when they never overlap.
"""

from __future__ import annotations

import numpy as np
import torch

from cl_fir.report.summary import markdown_table


def increment_features(scenario: str, overrides: dict | None = None, per_increment: int = 400,
                       seed: int = 0) -> tuple[list[str], list[np.ndarray]]:
    """Pooled starting-backbone features of up to ``per_increment`` training images of each
    increment (drawn at random with ``seed``), and the increments' names."""
    from torch.utils.data import Subset

    from cl_fir.engine.data_division import untransformed_view
    from cl_fir.evaluation.evaluator import embed_batches
    from cl_fir.runner import build_loop, resolve_config

    cfg = resolve_config("finetune", scenario, dict(overrides or {}), seed=seed)
    loop = build_loop(cfg)
    model = loop.model.eval()
    rng = np.random.default_rng(seed)
    names, features = [], []
    with torch.inference_mode():
        for inc in loop.scenario.increments:
            dataset, _ = loop.scenario.training_data([inc.index])
            view = untransformed_view(dataset)
            rows = np.sort(rng.choice(len(view), size=min(per_increment, len(view)), replace=False))
            feats = embed_batches(Subset(view, rows.tolist()), lambda x, *_: model.features(x).mean(dim=(2, 3)),
                                  loop.setup, cfg.eval.batch_size, loop.num_workers)
            features.append(feats.cpu().numpy())
            names.append("+".join(loop.scenario.meta.names[a] for a in inc.attributes))
    return names, features


def domain_accuracy(a: np.ndarray, b: np.ndarray, seed: int = 0, folds: int = 5) -> float:
    """Cross-validated accuracy of a logistic regression telling rows of ``a`` from rows of
    ``b`` (the larger set is subsampled to the smaller's size, so chance is exactly 50%)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    rng = np.random.default_rng(seed)
    n = min(len(a), len(b))
    x = np.concatenate([a[rng.choice(len(a), n, replace=False)], b[rng.choice(len(b), n, replace=False)]])
    y = np.concatenate([np.zeros(n), np.ones(n)])
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return float(cross_val_score(clf, x, y, cv=cv).mean())


def shift_matrix(features: list[np.ndarray], seed: int = 0) -> np.ndarray:
    """Domain-classifier accuracy (%) between every pair of increments (diagonal: NaN)."""
    n = len(features)
    out = np.full((n, n), np.nan)
    for i in range(n):
        for j in range(i + 1, n):
            out[i, j] = out[j, i] = 100.0 * domain_accuracy(features[i], features[j], seed)
    return out


def shift_markdown(names: list[str], matrix: np.ndarray) -> str:
    header = ["increment"] + [f"{k + 1}: {n}" for k, n in enumerate(names)]
    body = [[f"{i + 1}: {names[i]}"] + ["" if np.isnan(v) else f"{v:.1f}" for v in row] for i, row in enumerate(matrix)]
    consecutive = [matrix[i, i + 1] for i in range(len(names) - 1)]
    note = (f"Domain-classifier accuracy (%; 50 = the two increments' images cannot be told apart, 100 = they never "
            f"overlap); consecutive increments: mean {np.mean(consecutive):.1f}.") if consecutive else ""
    return markdown_table(header, body) + ("\n\n" + note if note else "")
