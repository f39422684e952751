"""ASEN++ (Dong et al., TIP 2021): a global and a local attribute-specific branch.

Following the released ASEN++ code (architecture, losses and recipe):

* global branch: the shared backbone's feature map and an attribute-attention head (the
  ``asen`` head of this package, one per increment for multi-head strategies);
* local branch: the attribute's global spatial attention, upsampled to the image, min-max
  normalised and thresholded (``crop_threshold``, 0.1 in the code's stage 2), gives a
  square box around the foreground, shifted inside the image; the box is cropped from the
  input batch with ``roi_align`` at ``local_size`` px, embedded by a second, smaller
  backbone (``local_backbone``, ResNet-34 to layer3 in the paper) and a local head that
  shares the attribute embedding table with the global head; no gradient through the box;
* retrieval on ``[sqrt(b) g ; sqrt(1 - b) l]`` (b = ``fusion_weight``, 0.6), so the score is
  ``b cos_g + (1 - b) cos_l``;
* training loss ``L(g) + local_loss_weight L(l) + align_weight mean(1 - cos(g, l))``
  (0.1 and 0.1); the first ``global_only_epochs`` epochs of each increment train the global
  branch alone (the code's stage 1; retrieval is then on ``g``).

Deviations (documented in docs/strategies.md): the crop comes from the network input, not
the original-resolution image; the code's stage 2 drops the global branch's learning rate
to 0.1x, here both branches keep the run's learning rate; the heads are the ``asen`` head
(ASEN_v2 style: BatchNorm and a projection before pooling) rather than ASEN++'s own.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import roi_align

from cl_fir.models.retrieval_model import RetrievalModel
from cl_fir.models.routing import GroupRouting


class BranchFeatures:
    """What both branches need from the shared backbone pass: its feature map and the input
    images (the local crop is taken from them). Indexing selects samples, like a tensor."""

    __slots__ = ("fmap", "images")

    def __init__(self, fmap: torch.Tensor, images: torch.Tensor):
        self.fmap, self.images = fmap, images

    def __getitem__(self, index) -> "BranchFeatures":
        return BranchFeatures(self.fmap[index], self.images[index])

    @property
    def shape(self) -> torch.Size:
        return self.fmap.shape

    def detach(self) -> "BranchFeatures":
        return BranchFeatures(self.fmap.detach(), self.images.detach())


@torch.no_grad()
def attention_boxes(attention: torch.Tensor, image_size: tuple[int, int], threshold: float) -> torch.Tensor:
    """Square boxes ``(x1, y1, x2, y2)`` in pixels around each thresholded attention map.

    ``attention`` (B, h, w) is upsampled bilinearly to ``image_size`` (H, W), min-max
    normalised per image and binarised at ``threshold``; the foreground's bounding box is
    made square (side = its longer side, capped at the image's shorter side) around its
    centre and shifted inward where it crosses the border.
    """
    H, W = image_size
    maps = F.interpolate(attention[:, None].float(), size=(H, W), mode="bilinear", align_corners=False)[:, 0]
    flat = maps.flatten(1)
    lo, hi = flat.min(1).values[:, None, None], flat.max(1).values[:, None, None]
    fg = (maps - lo) / (hi - lo).clamp_min(1e-12) >= threshold
    rows, cols = fg.any(2), fg.any(1)                                    # (B, H), (B, W)
    ys, xs = torch.arange(H, device=maps.device), torch.arange(W, device=maps.device)
    y0 = torch.where(rows, ys, H).min(1).values.float()
    y1 = torch.where(rows, ys, -1).max(1).values.float() + 1
    x0 = torch.where(cols, xs, W).min(1).values.float()
    x1 = torch.where(cols, xs, -1).max(1).values.float() + 1
    side = torch.maximum(y1 - y0, x1 - x0).clamp(max=min(H, W))
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    top = (cy - side / 2).clamp(min=0.0)
    top = torch.minimum(top, H - side)
    left = (cx - side / 2).clamp(min=0.0)
    left = torch.minimum(left, W - side)
    return torch.stack([left, top, left + side, top + side], dim=1)


class AsenPlusPlusHead(nn.Module):
    """One increment's pair of heads; the local head uses the global head's attribute table."""

    def __init__(self, global_head: nn.Module, local_head: nn.Module):
        super().__init__()
        self.glob, self.local = global_head, local_head
        self.local.attribute_embedding = self.glob.attribute_embedding


class AsenPlusPlusModel(RetrievalModel):
    def __init__(self, backbone: nn.Module, heads: Sequence[AsenPlusPlusHead], head_of_attribute: Sequence[int],
                 local_backbone: nn.Module, local_size: int = 112, crop_threshold: float = 0.1,
                 fusion_weight: float = 0.6, local_loss_weight: float = 0.1, align_weight: float = 0.1,
                 global_only_epochs: int = 0):
        super().__init__(backbone, heads, head_of_attribute)
        self.local_backbone = local_backbone
        self.local_size, self.crop_threshold = local_size, crop_threshold
        self.fusion_weight, self.local_loss_weight, self.align_weight = fusion_weight, local_loss_weight, align_weight
        self.global_only_epochs = global_only_epochs
        self.local_active = True
        #: ``[(weight, embeddings)]`` of the last training forward: the strategy's metric loss per branch
        self.training_branches: list[tuple[float, torch.Tensor]] | None = None
        self.aux_losses: list[torch.Tensor] = []

    def set_epoch(self, epoch: int) -> None:
        """Called by the loop before each epoch: the code's stage 1 (global only), then stage 2."""
        self.local_active = epoch >= self.global_only_epochs

    def features(self, images: torch.Tensor) -> BranchFeatures:
        return BranchFeatures(self.backbone(images), images)

    def _routing(self, attributes: torch.Tensor):
        """Applies ``compute(head, indices)`` to each head's samples (all of them with one head)."""
        if len(self.heads) == 1:
            everything = torch.arange(attributes.shape[0], device=attributes.device)
            return lambda compute: compute(0, everything)
        return GroupRouting.through(self.head_of_attribute, self.head_of_attribute_host, attributes, len(self.heads))

    def _branches(self, feats: BranchFeatures, attributes: torch.Tensor):
        """The global and local embeddings. Heads are routed per increment, but the local
        backbone runs once on the whole batch's crops (it is shared, like the main backbone):
        one large call instead of one per head, BatchNorm statistics over the whole batch as
        the main backbone's are, and under torchrun the same layers run on every rank
        whichever heads its share needs, so synchronised BatchNorm stays safe there."""
        route = self._routing(attributes)
        g, attention = route(lambda h, idx: self.heads[h].glob(feats.fmap[idx], attributes[idx],
                                                               return_attention=True))
        if not self.local_active:
            return g, torch.zeros_like(g)
        images = feats.images
        boxes = attention_boxes(attention, images.shape[-2:], self.crop_threshold)
        rois = torch.cat([torch.arange(images.shape[0], device=boxes.device, dtype=boxes.dtype)[:, None], boxes], 1)
        crops = roi_align(images.float(), rois.float(), output_size=self.local_size, aligned=True)
        local_fmap = self.local_backbone(crops.to(images.dtype))
        local, = route(lambda h, idx: (self.heads[h].local(local_fmap[idx], attributes[idx]),))
        return g, local

    def _fuse(self, g: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        if not self.local_active:
            return torch.cat([g, local], dim=1)          # local is zero: retrieval on g alone, unit norm
        b = self.fusion_weight
        return torch.cat([math.sqrt(b) * g, math.sqrt(1.0 - b) * local], dim=1)

    def embed(self, feats: BranchFeatures, attributes: torch.Tensor, groups: torch.Tensor | None = None):
        if groups is not None:
            raise ValueError("ASEN++ does not divide the data (no head dnc)")
        return self._fuse(*self._branches(feats, attributes))

    def forward(self, images: torch.Tensor, attributes: torch.Tensor, return_features: bool = False,
                groups: torch.Tensor | None = None):
        feats = self.features(images)
        if groups is not None:
            raise ValueError("ASEN++ does not divide the data (no head dnc)")
        g, local = self._branches(feats, attributes)
        out = self._fuse(g, local)
        self.training_branches = None
        if self.training:
            self.training_branches = [(1.0, g)]
            if self.local_active:
                self.training_branches.append((self.local_loss_weight, local))
                if self.align_weight:
                    align = (1.0 - F.cosine_similarity(g.float(), local.float(), dim=1)).mean()
                    self.aux_losses.append(self.align_weight * align)
        return (out, feats) if return_features else out
