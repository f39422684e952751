"""MCL-FIR with the paper's own objective and teacher horizon, as a named variant.

``mcl_fir`` trains with the benchmark's common objective (label-aware InfoNCE, the same
as every other strategy), so that a comparison measures the continual-learning method and
not the loss. The paper's NT-Xent instead treats in-batch items that share the anchor's
value as negatives, and its EMA teacher uses momentum 0.999; this variant keeps both, so
the difference to ``mcl_fir`` measures what the objective and the horizon change.
``cl-fir compare`` flags it as trained with another objective.
"""

from dataclasses import dataclass

from cl_fir.registry import register_strategy
from cl_fir.strategies.mcl_fir import MCLFIR


@register_strategy("mcl_fir_paper", families=("attribute", "composed"))
class MCLFIRPaper(MCLFIR):
    summary = "mcl_fir with the paper's NT-Xent (same-value items are negatives) and EMA momentum 0.999"

    @dataclass
    class Options(MCLFIR.Options):
        label_aware: bool = False        # the paper's NT-Xent: same-value items are negatives
        ema_momentum: float = 0.999      # the paper's teacher horizon (about 1,000 steps)
