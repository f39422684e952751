"""MODC with static retraining: at every increment, restart from the initial weights and
run MODC's stages on all tasks seen so far (labelled and unlabelled), with fresh centroid
banks. The MODC counterpart of ``static``: same budget rule (``samples_per_epoch`` per
seen increment), no frozen anchors and no old-attribute pseudo-labels."""

from cl_fir.registry import register_strategy
from cl_fir.strategies.modc import MODC


@register_strategy("modc_static")
class MODCStatic(MODC):
    summary = "MODC retrained from the initial weights on all tasks seen so far at every increment"
    retrain = True

    def training_increments(self, loop):
        return list(range(loop.increment.index + 1))

    def doublets_per_epoch(self, loop, num_increments):
        return loop.cfg.train.samples_per_epoch * num_increments
