"""Composed image retrieval model: one image encoder (the attribute family's timm backbone,
globally pooled and projected), a GRU text encoder over the training vocabulary, and one
TIRG compositor per head (multi-head strategies keep one per increment; every head exists
from the start, as in the attribute family).

* query: ``normalise(compositor_h(image(reference), text(modification)))``
* target / gallery: ``normalise(image(target))``

``forward(images, tasks)`` is the gallery embedding, so cost counting and generic code
that embeds images keep working. The vocabulary is built from every increment's training
captions when the model is built (word ids only: a word's embedding row is trained only
once an increment uses it), so the parameter set never changes during a run.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cl_fir.runtime.device import host_to_device
from cl_fir.models.backbones import FeatureMapBackbone
from cl_fir.models.compositor import TIRGCompositor
from cl_fir.models.routing import route_through
from cl_fir.models.text_encoder import GRUTextEncoder, Vocabulary


class ComposedRetrievalModel(nn.Module):
    def __init__(self, backbone: FeatureMapBackbone, vocabulary: Vocabulary, embed_dim: int, num_heads: int,
                 head_of_task: Sequence[int], word_dim: int = 300, text_hidden: int = 512,
                 text_encoder: nn.Module | None = None):
        super().__init__()
        self.backbone = backbone
        self.project = nn.Linear(backbone.out_channels, embed_dim)
        self.vocabulary = vocabulary
        #: a GRU over the vocabulary, or a module mapping a list of texts to (B, embed_dim)
        self.text_encoder = text_encoder or GRUTextEncoder(len(vocabulary), embed_dim, word_dim, text_hidden)
        self.heads = nn.ModuleList(TIRGCompositor(embed_dim, embed_dim) for _ in range(num_heads))
        self.register_buffer("head_of_attribute", torch.as_tensor(list(head_of_task), dtype=torch.long),
                             persistent=False)
        self.head_of_attribute_host = np.asarray(list(head_of_task), dtype=np.int64)   # routing without device reads

    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        return self.project(self.backbone(images).mean(dim=(2, 3)))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.backbone(images)

    def text_features(self, texts: Sequence[str], device) -> torch.Tensor:
        if not isinstance(self.text_encoder, GRUTextEncoder):
            return self.text_encoder(list(texts))
        tokens, lengths = self.vocabulary.encode(list(texts))
        return self.text_encoder(host_to_device(tokens, device), lengths)   # lengths stay on the host

    def compose(self, image_feat: torch.Tensor, text_feat: torch.Tensor, tasks: torch.Tensor) -> torch.Tensor:
        if len(self.heads) == 1:
            return self.heads[0](image_feat, text_feat)
        return route_through(self.head_of_attribute, self.head_of_attribute_host, tasks,
                             lambda h, idx: (self.heads[h](image_feat[idx], text_feat[idx]),), len(self.heads))[0]

    def embed_query(self, references: torch.Tensor, texts: Sequence[str], tasks: torch.Tensor) -> torch.Tensor:
        composed = self.compose(self.image_features(references), self.text_features(texts, references.device), tasks)
        return F.normalize(composed.float(), dim=1)

    def embed_target(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_features(images).float(), dim=1)

    def forward(self, images: torch.Tensor, tasks: torch.Tensor | None = None, return_features: bool = False):
        fmap = self.backbone(images)
        emb = F.normalize(self.project(fmap.mean(dim=(2, 3))).float(), dim=1)
        return (emb, fmap) if return_features else emb
