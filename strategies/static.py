"""Static retraining: at every increment, train from the initial weights on all tasks seen so
far, as a team without continual learning would. It is the quality reference and the cost
reference (the denominator of every cost ratio).

Budget: each task gets the same number of training doublets per epoch as in the continual
strategies, so an epoch over ``n`` seen increments draws ``n`` times the per-increment
``samples_per_epoch``, with attributes sampled uniformly (:class:`~cl_fir.strategy.StaticRetraining`).
"""

from cl_fir.registry import register_strategy
from cl_fir.strategy import StaticRetraining


@register_strategy("static", families=("attribute", "composed"))
class StaticRetrain(StaticRetraining):
    summary = "retrain from the initial weights on all tasks seen so far at every increment (reference)"
