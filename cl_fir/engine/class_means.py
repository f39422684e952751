"""Class means of training images: prioritised retrieval's stored centroids, and the starting
centroids of strategies that keep their own (MODC)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Subset

from cl_fir.engine.data_division import untransformed_view
from cl_fir.evaluation.evaluator import embed_under_attributes


@torch.inference_mode()
def class_means(model, scenario, increments: list[int], setup, batch_size: int, num_workers: int, dist,
                cost) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """attribute -> (unit-norm mean embedding of each value's labelled training images of
    ``increments``, un-augmented, under ``model`` (values x D); which values have images).
    All attributes in one loader pass; under torchrun each rank embeds a share of the images
    (as evaluation does). Counted in ``cost`` as one forward pass per image."""
    dataset, table = scenario.training_data(increments)
    view = untransformed_view(dataset)
    modes = {m: m.training for m in model.modules()}
    model.eval()
    out = {}
    try:
        attributes = sorted(set(table.attributes.tolist()))
        rows_of = {a: np.flatnonzero(table.attributes == a) for a in attributes}
        embedded = embed_under_attributes(model, [(Subset(view, rows_of[a].tolist()), a) for a in attributes],
                                          setup, batch_size, num_workers, dist, on_wait=cost.add_data_wait)
        for a, emb in zip(attributes, embedded):
            rows = rows_of[a]
            values = torch.as_tensor(table.values[rows], device=setup.device)
            num_values = scenario.meta.num_values[a]
            means = torch.zeros(num_values, emb.shape[1], device=emb.device)
            valid = torch.zeros(num_values, dtype=torch.bool)
            for v in torch.unique(values).tolist():
                means[v] = F.normalize(emb[values == v].mean(dim=0), dim=0)
                valid[v] = True
            out[a] = (means.cpu(), valid)
            cost.add_forward_only(len(rows), all_ranks=True)
    finally:
        for m, mode in modes.items():
            m.training = mode
    return out
