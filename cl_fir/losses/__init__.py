"""Losses on L2-normalised embeddings: metric losses as registered objects (``registry``), one
file each, and the distillation terms strategies add (``distillation``).

Each batch loss used as a metric loss has a ``*_terms`` form: one term per sample of the batch
(doublet or triplet), each computed with the whole batch as its context (in-batch negatives),
whose mean is the loss. Per-sample gradients (EWC's empirical Fisher) are taken of these terms.

Every module of this package is imported with it, so a loss file dropped here registers itself.
"""

import importlib
import pkgutil

from cl_fir.losses.composed import (BatchClassification, UncertaintyRegularised, augment_target_features,
                                    batch_classification_loss, batch_classification_terms, uncertainty_gamma,
                                    uncertainty_regularised_loss, uncertainty_regularised_terms)
from cl_fir.losses.distillation import embedding_distillation, pooled_feature_distillation, similarity_distillation
from cl_fir.losses.infonce import DoubletInfoNCE, doublet_infonce, doublet_infonce_terms, mean_over
from cl_fir.losses.multi_similarity import MultiSimilarity, multi_similarity_loss, multi_similarity_terms
from cl_fir.losses.registry import LOSSES, MetricLoss, build_loss, loss_names, register_loss

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["LOSSES", "BatchClassification", "DoubletInfoNCE", "MetricLoss", "MultiSimilarity",
           "UncertaintyRegularised", "augment_target_features", "batch_classification_loss",
           "batch_classification_terms", "build_loss", "doublet_infonce", "doublet_infonce_terms",
           "embedding_distillation", "loss_names", "mean_over", "multi_similarity_loss", "multi_similarity_terms",
           "pooled_feature_distillation", "register_loss", "similarity_distillation", "uncertainty_gamma",
           "uncertainty_regularised_loss", "uncertainty_regularised_terms"]
