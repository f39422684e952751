"""Experience replay with a fixed-size, class-balanced buffer.

One shared model, as ``finetune``. After each increment the buffer (``buffer_size``
images in all) is re-balanced over every class seen so far (class = attribute value):
each class keeps an equal quota, old classes drop their surplus, new classes are filled
by a seeded random draw from the increment's training images. While training, a
``replay_fraction`` of each batch's doublets comes from the buffer (two buffered images
of the same class) and the rest from the new increment; batches keep their size. The
buffer's size is reported in the cost (``stored_images``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cl_fir.data.samplers import DoubletBatchSampler, MixedDoubletSampler
from cl_fir.engine.seeding import Stream
from cl_fir.errors import ConfigError
from cl_fir.registry import register_strategy
from cl_fir.strategy import Strategy


@register_strategy("replay")
class Replay(Strategy):
    summary = "one shared model; a fixed-size class-balanced buffer of past images mixed into every batch"

    @dataclass
    class Options(Strategy.Options):
        buffer_size: int = 200           # images kept from past increments (class-balanced)
        replay_fraction: float = 0.5     # share of each batch's doublets drawn from the buffer

    def __init__(self, options=None):
        super().__init__(options)
        if self.opts.buffer_size < 2:
            raise ConfigError(f"--opt buffer_size: expected an integer >= 2, got {self.opts.buffer_size}")
        if not 0.0 < self.opts.replay_fraction < 1.0:
            raise ConfigError(f"--opt replay_fraction: expected a number in (0, 1), got {self.opts.replay_fraction}")
        # class id -> (increment, row in that increment's training table), in kept order
        self.buffer: dict[int, list[tuple[int, int]]] = {}

    def training_batches(self, ctx, epoch):
        if not self.buffer:
            return super().training_batches(ctx, epoch)
        inc = ctx.increment.index
        dataset, table = ctx.scenario.training_data(list(range(inc + 1)))
        offsets = np.cumsum([0] + [len(i.train_table) for i in ctx.scenario.increments[: inc + 1]])
        new_rows = np.arange(offsets[inc], offsets[inc + 1])
        buffered = np.asarray([offsets[i] + r for items in self.buffer.values() for i, r in items], dtype=np.int64)
        B = ctx.cfg.train.batch_size
        n_replay = max(1, min(B - 1, int(round(B * self.opts.replay_fraction))))
        steps = max(1, ctx.cfg.train.samples_per_epoch // B)
        samplers = [
            DoubletBatchSampler(table, B - n_replay, steps * (B - n_replay), ctx.epoch_seed(epoch, Stream.DOUBLETS),
                                rows=new_rows, min_batch_size=1),
            DoubletBatchSampler(table, n_replay, steps * n_replay, ctx.epoch_seed(epoch, Stream.REPLAY_DOUBLETS),
                                rows=buffered, min_batch_size=1),
        ]
        return dataset, MixedDoubletSampler(samplers)

    def after_training_exp(self, ctx):
        inc = ctx.increment
        table = inc.train_table
        class_ids = ctx.scenario.meta.class_offsets[table.attributes] + table.values
        classes = sorted(set(self.buffer) | set(class_ids.tolist()))
        quota = self.opts.buffer_size // len(classes)
        if quota < 2:
            raise ConfigError(f"--opt buffer_size={self.opts.buffer_size} leaves fewer than 2 images for each of the "
                              f"{len(classes)} classes seen (a doublet needs 2); use at least {2 * len(classes)}")
        rng = np.random.default_rng(ctx.epoch_seed(0, Stream.REPLAY_BUFFER))
        for c in classes:
            if c in self.buffer:
                self.buffer[c] = self.buffer[c][:quota]
            else:
                rows = np.flatnonzero(class_ids == c)
                picked = rng.choice(rows, size=min(quota, rows.size), replace=False)
                self.buffer[c] = [(inc.index, int(r)) for r in picked]
        ctx.count_stored_images(sum(len(v) for v in self.buffer.values()))

    def state_dict(self):
        return {"buffer": {int(c): [list(item) for item in items] for c, items in self.buffer.items()}}

    def load_state_dict(self, state, ctx):
        self.buffer = {int(c): [tuple(item) for item in items] for c, items in state["buffer"].items()}
