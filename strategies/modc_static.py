"""MODC with static retraining: at every increment, restart from the initial weights and run
MODC's stages on all tasks seen so far (labelled and unlabelled), with fresh centroid banks
and predictor (:meth:`MODC.forget`). The MODC counterpart of ``static``: same budget rule
(``samples_per_epoch`` per seen increment), no frozen anchors and no old-attribute pseudo-labels."""

from cl_fir.registry import register_strategy
from cl_fir.strategies.modc import MODC
from cl_fir.strategy import StaticRetraining


@register_strategy("modc_static")
class MODCStatic(StaticRetraining, MODC):
    summary = "MODC retrained from the initial weights on all tasks seen so far at every increment"
