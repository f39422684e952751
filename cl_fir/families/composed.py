"""The composed family: triplets (reference image, modification text, target image) of one
category; the query is the reference composed with the text by the category's compositor."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cl_fir.data.samplers import ComposedBatchSampler
from cl_fir.families.base import Batch, TaskFamily
from cl_fir.models.factory import build_composed_model
from cl_fir.models.routing import auxiliary_loss, clear_auxiliary


class ComposedFamily(TaskFamily):
    name = "composed"
    paired = False
    feature_maps = False      # features are the references' projected image features

    @staticmethod
    def build_model(cfg, scenario, head_of_task):
        return build_composed_model(cfg.model, scenario, head_of_task)

    @staticmethod
    def sampler(table, batch_size, samples, seed):
        return ComposedBatchSampler(table, batch_size, samples, seed)

    def load(self, raw, setup, rank):
        """Labels number the queries over the whole batch across processes (query i's target is
        row B + i of the gathered outputs)."""
        ref, texts, tgt, task = raw
        inputs = setup.to_device(ref)
        b = inputs.shape[0]
        return Batch(inputs=inputs, targets=setup.to_device(tgt), texts=list(texts),
                     local_tasks=setup.from_host(task),
                     labels=(torch.arange(b, device=setup.device) + rank * b).repeat(2))

    def forward(self, model, batch, setup):
        """``outputs = [queries; targets]`` (B each)."""
        clear_auxiliary(model)
        with setup.autocast():
            batch.features = model.image_features(batch.inputs)
            batch.text_features = model.text_features(batch.texts, setup.device)
            queries = model.compose(batch.features, batch.text_features, batch.local_tasks)
            batch.outputs = torch.cat([F.normalize(queries.float(), dim=1), model.embed_target(batch.targets)])
        batch.aux = auxiliary_loss(model)
        return 2 * batch.inputs.shape[0]

    def metric_loss(self, batch, label_aware, epoch, epochs):
        return self.loss(batch.outputs, epoch=epoch, epochs=epochs)

    def metric_terms(self, batch, label_aware, epoch, epochs):
        return self.loss.terms(batch.outputs, epoch=epoch, epochs=epochs)

    def teacher_inputs(self, batch, teacher, view, setup, cost):
        """The (distorted) references and targets; the teacher embeds them per category."""
        if view is None:
            return batch.inputs, batch.targets
        return view(batch.inputs), view(batch.targets)

    def distillation_pairs(self, batch, student, teacher, inputs, attributes, setup, cost):
        """Queries under other categories' compositors (the student's from the features it already
        has: only the compositors run again) and targets through the shared image encoder, each
        against the teacher's forward of its view."""
        refs, targets = inputs
        n = batch.inputs.shape[0]
        with setup.autocast():
            student_q = F.normalize(student.compose(batch.features, batch.text_features, attributes).float(), dim=1)
            with torch.no_grad():
                teacher_q = teacher.embed_query(refs, batch.texts, attributes)
                teacher_t = teacher.embed_target(targets)
        cost.add_forward_only(2 * n)          # the teacher's passes over references and targets
        cost.add_head_passes(n)               # the student's extra compositor pass (back-propagated)
        return [(student_q, teacher_q), (batch.local_outputs[n:], teacher_t)]   # this process's targets
