"""The attribute family: doublets ``(anchor, positive)`` of one attribute value, embedded under
the attribute by an attribute-conditioned head."""

from __future__ import annotations

import torch

from cl_fir.data.samplers import DoubletBatchSampler
from cl_fir.families.base import Batch, TaskFamily
from cl_fir.models import build_model
from cl_fir.models.routing import auxiliary_loss, clear_auxiliary


class AttributeFamily(TaskFamily):
    name = "attribute"
    paired = True

    @staticmethod
    def build_model(cfg, scenario, head_of_task):
        return build_model(cfg.model, scenario.meta.num_attributes, head_of_task)

    @staticmethod
    def sampler(table, batch_size, samples, seed):
        return DoubletBatchSampler(table, batch_size, samples, seed)

    def load(self, raw, setup, rank):
        x, y, task, *group = raw
        return Batch(inputs=setup.to_device(x), labels=y.to(setup.device, non_blocking=True),
                     local_tasks=setup.from_host(task),            # the host keeps a copy, for routing
                     groups=group[0].to(setup.device, non_blocking=True) if group else None)

    def forward(self, model, batch, setup):
        clear_auxiliary(model)
        with setup.autocast():
            grouped = {} if batch.groups is None else {"groups": batch.groups}
            batch.outputs, batch.features = model(batch.inputs, batch.local_tasks, return_features=True, **grouped)
        batch.aux = auxiliary_loss(model)     # this forward's own, once (see TrainingLoop)
        batch.branches = getattr(model, "training_branches", None)
        if batch.branches is not None:   # taken: a copy of the model (lwf's, modc's old model) cannot hold a graph
            model.training_branches = None
        return batch.inputs.shape[0]

    def metric_loss(self, batch, label_aware, epoch, epochs):
        """On ``[anchors; positives]``; for models with several branches (ASEN++), the weighted
        sum of the loss on each branch's embeddings."""
        labels = batch.labels if label_aware else None
        if batch.branches:
            return sum(w * self.loss(out, labels) for w, out in batch.branches)
        return self.loss(batch.outputs, labels)

    def metric_terms(self, batch, label_aware, epoch, epochs):
        labels = batch.labels if label_aware else None
        if batch.branches:
            return sum(w * self.loss.terms(out, labels) for w, out in batch.branches)
        return self.loss.terms(batch.outputs, labels)

    def teacher_inputs(self, batch, teacher, view, setup, cost):
        """The teacher's feature maps of the (distorted) images, computed once for every attribute."""
        with torch.no_grad(), setup.autocast():
            images = batch.inputs if view is None else view(batch.inputs)
            # a retrieval model, or a backbone alone (its forward gives the feature maps)
            features = teacher.features(images) if hasattr(type(teacher), "features") else teacher(images)
        cost.add_forward_only(images.shape[0], backbone_only=True)   # its head passes are counted per attribute
        return features

    def distillation_pairs(self, batch, student, teacher, inputs, attributes, setup, cost):
        """The student's and the teacher's embeddings of each image under its attribute: one head
        pass each (the student's back-propagated)."""
        n = batch.inputs.shape[0]
        with setup.autocast():
            with torch.no_grad():
                t_emb = teacher.embed(inputs, attributes)
            s_emb = student.embed(batch.features, attributes)
        cost.add_head_passes(n, backward=False)
        cost.add_head_passes(n)
        return [(s_emb, t_emb)]
