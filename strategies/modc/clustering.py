"""The parts of MODC's online deep clustering (our reconstruction; docs/strategies.md).

The MODC main text is not available; the supplement fixes which losses are active in
which stage but gives no formula. Everything below is **our reconstruction** (the notes'
proposal, ODC-style), kept to pure tensor functions so each is tested against a slow
explicit loop:

* :class:`CentroidBank`: one unit-norm centroid per class (class = attribute value, global
  class id ``class_offsets[a] + value``), updated online by a per-batch EMA; classes can be
  frozen (old increments' anchors);
* :func:`cluster_loss`: softmax over the centroids of the sample's own attribute (tau_c),
  centroids without gradient;
* :meth:`CentroidBank.pseudo_labels`: nearest centroid of the attribute and its softmax
  confidence;
* :func:`simsiam_loss`: SimSiam's symmetric negative cosine with stop-gradient;
* :func:`modc_stage`: the stage machine (warm-up, supervised, semi-supervised steps 1-4);
  :class:`StageSchedule` fits it to an increment too short for it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from cl_fir.losses import mean_over

#: stage index -> name; losses are cumulative along this order
STAGES = ("warmup", "supervised", "semi1_ss_labelled", "semi2_ss_unlabelled", "semi3_instance_pseudo",
          "semi4_cluster_pseudo")


def modc_stage(epoch: int, warmup_epochs: int, supervised_epochs: int, step_epochs: int) -> int:
    """Stage of an epoch of one increment: ``warmup_epochs`` of warm-up, ``supervised_epochs``
    supervised, then the semi-supervised steps 1-3 of ``step_epochs`` each; step 4 runs to the
    end (each step keeps the losses of the steps before it)."""
    if epoch < warmup_epochs:
        return 0
    if epoch < warmup_epochs + supervised_epochs:
        return 1
    return 2 + min(3, (epoch - warmup_epochs - supervised_epochs) // max(1, step_epochs))


def stage_epochs(warmup_epochs: int, supervised_epochs: int, step_epochs: int) -> list[int]:
    """Epochs of each stage of the full schedule (step 4 counted as one: it runs to the end)."""
    return [warmup_epochs, supervised_epochs, step_epochs, step_epochs, step_epochs, 1]


class StageSchedule:
    """The stage of every step of an increment of ``epochs`` epochs of ``steps_per_epoch`` steps.

    When the increment holds the full schedule (``epochs >= sum(stage_epochs)``), stages go
    by epoch (:func:`modc_stage`). Otherwise ("fitted") the increment's steps are shared
    among the stages in proportion to their epochs: stage j trains steps
    ``[N C_j // U, N C_{j+1} // U)`` of the increment, with N its steps, U the schedule's
    epochs and C_j the epochs before stage j; a stage can then change within an epoch (a
    stage of 0 epochs, or one whose share rounds to nothing, does not run)."""

    def __init__(self, epochs: int, steps_per_epoch: int, warmup_epochs: int, supervised_epochs: int,
                 step_epochs: int):
        self.epochs, self.steps_per_epoch = epochs, steps_per_epoch
        self.lengths = (warmup_epochs, supervised_epochs, step_epochs)
        units = stage_epochs(warmup_epochs, supervised_epochs, step_epochs)
        self.needed = sum(units)
        self.by_epoch = epochs >= self.needed
        total = epochs * steps_per_epoch
        before = np.cumsum([0] + units)
        #: first step (over the increment) of each stage, and the increment's end
        self.bounds = [int(total * c // self.needed) for c in before]

    def stage(self, epoch: int, step: int) -> int:
        """The stage of step ``step`` of epoch ``epoch``."""
        if self.by_epoch:
            return modc_stage(epoch, *self.lengths)
        g = epoch * self.steps_per_epoch + step
        return max(j for j in range(len(STAGES)) if self.bounds[j] <= g)

    def segments(self, epoch: int) -> list[tuple[int, int]]:
        """``(stage, steps)`` of the epoch's consecutive runs of one stage, in order."""
        if self.by_epoch:
            return [(modc_stage(epoch, *self.lengths), self.steps_per_epoch)]
        out: list[tuple[int, int]] = []
        for step in range(self.steps_per_epoch):
            s = self.stage(epoch, step)
            if out and out[-1][0] == s:
                out[-1] = (s, out[-1][1] + 1)
            else:
                out.append((s, 1))
        return out

    def steps_per_stage(self) -> list[int]:
        """Steps of the increment in each stage."""
        counts = [0] * len(STAGES)
        for epoch in range(self.epochs):
            for s, n in self.segments(epoch):
                counts[s] += n
        return counts


class CentroidBank:
    """Centroids of every class of the scenario (rows of never-seen classes stay invalid)."""

    def __init__(self, class_offsets, num_values, dim: int):
        offsets = np.asarray(class_offsets, dtype=np.int64)
        counts = np.asarray(num_values, dtype=np.int64)
        self.class_offsets = torch.as_tensor(offsets)
        self.attribute_of_class = torch.as_tensor(np.repeat(np.arange(len(counts)), counts))
        n = int(counts.sum())
        self.centroids = torch.zeros(n, dim)
        self.valid = torch.zeros(n, dtype=torch.bool)
        self.frozen = torch.zeros(n, dtype=torch.bool)

    def to(self, device) -> "CentroidBank":
        for name in ("class_offsets", "attribute_of_class", "centroids", "valid", "frozen"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def set_attribute(self, attribute: int, means: torch.Tensor, valid: torch.Tensor) -> None:
        """Centroids of one attribute's values (``means``: values x D, rows with ``valid``)."""
        start = int(self.class_offsets[attribute])
        rows = slice(start, start + means.shape[0])
        self.centroids[rows] = F.normalize(means.to(self.centroids), dim=1)
        self.valid[rows] = valid.to(self.valid.device)
        self.frozen[rows] = False

    def freeze(self, attributes) -> None:
        self.frozen |= torch.isin(self.attribute_of_class, torch.as_tensor(list(attributes), device=self.frozen.device))

    def attribute_centroids(self, attribute: int) -> tuple[torch.Tensor, torch.Tensor]:
        rows = self.attribute_of_class == attribute
        return self.centroids[rows].clone(), self.valid[rows].clone()

    def logits(self, z: torch.Tensor, attributes: torch.Tensor, temperature: float) -> torch.Tensor:
        """``z @ centroids.T / tau`` with every class outside the row's attribute (or invalid) at -inf."""
        out = z.float() @ self.centroids.t() / temperature
        allowed = (self.attribute_of_class[None, :] == attributes[:, None]) & self.valid[None, :]
        return out.masked_fill(~allowed, float("-inf"))

    @torch.no_grad()
    def pseudo_labels(self, z: torch.Tensor, attributes: torch.Tensor, temperature: float):
        """Global class id of the nearest valid centroid of each row's attribute, and its
        softmax probability (the confidence)."""
        probs = self.logits(z, attributes, temperature).softmax(dim=1)
        confidence, classes = probs.max(dim=1)
        return classes, confidence

    @torch.no_grad()
    def update(self, z: torch.Tensor, classes: torch.Tensor, momentum: float) -> None:
        """EMA of each non-frozen class present: ``mu <- normalise(m mu + (1 - m) mean_batch(z))``
        (a class without a centroid yet starts at its batch mean); rows of class < 0 are left
        out. All classes at once, in fixed shapes: nothing the host must read (a GPU wait),
        and the batch means come from a product with the rows' one-hot classes, which, unlike
        atomic scatter-adds, sums in the same order on every run."""
        z = z.detach().float()
        n = self.centroids.shape[0]
        one_hot = (classes[:, None] == torch.arange(n, device=classes.device)[None, :]).to(z.dtype)
        counts = one_hot.sum(dim=0)
        mean = (one_hot.t() @ z) / counts.clamp(min=1)[:, None]
        old = torch.where(self.valid[:, None], self.centroids, mean)
        moved = F.normalize(momentum * old + (1.0 - momentum) * mean, dim=1)
        change = (counts > 0) & ~self.frozen
        self.centroids.copy_(torch.where(change[:, None], moved, self.centroids))
        self.valid |= change

    def state_dict(self) -> dict:
        return {"centroids": self.centroids.cpu(), "valid": self.valid.cpu(), "frozen": self.frozen.cpu()}

    def load_state_dict(self, state: dict) -> None:
        device = self.centroids.device
        self.centroids = state["centroids"].to(device)
        self.valid = state["valid"].to(device)
        self.frozen = state["frozen"].to(device)


def cluster_loss(z: torch.Tensor, classes: torch.Tensor, attributes: torch.Tensor, bank: CentroidBank,
                 temperature: float, rows: torch.Tensor | None = None) -> torch.Tensor:
    """Cluster-level loss: cross-entropy of each row's class against the centroids of its
    attribute (gradient to ``z`` only); 0 for an empty batch. With ``rows`` (a boolean per
    row), the mean over the selected rows alone (0 when none), computed with masks instead
    of selecting by mask (a shape the host would have to read)."""
    if z.shape[0] == 0:
        return z.new_zeros(()).float()
    logits = bank.logits(z, attributes, temperature)
    if rows is None:
        return F.cross_entropy(logits, classes)
    # a left-out row may have no class (-1): zero logits and class 0 keep its term finite; weight 0
    terms = F.cross_entropy(logits.masked_fill(~rows[:, None], 0.0), torch.where(rows, classes, 0), reduction="none")
    return mean_over(terms, rows)


def simsiam_loss(p1: torch.Tensor, p2: torch.Tensor, z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """``1/2 [D(p1, sg z2) + D(p2, sg z1)]`` with ``D = 1 - cos`` (SimSiam, shifted to be >= 0)."""
    if p1.shape[0] == 0:
        return p1.new_zeros(()).float()
    d1 = 1.0 - F.cosine_similarity(p1.float(), z2.detach().float(), dim=1)
    d2 = 1.0 - F.cosine_similarity(p2.float(), z1.detach().float(), dim=1)
    return 0.5 * (d1.mean() + d2.mean())
