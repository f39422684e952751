"""Ablation: MCL-FIR without the EMA teacher, so without any distillation.

Everything else (shared encoder, one head per increment, frozen old heads, doublet
InfoNCE) is ``mcl_fir``; the difference to it measures what the teacher buys.
"""

from cl_fir.registry import register_strategy
from cl_fir.strategies.mcl_fir import MCLFIR


@register_strategy("mcl_fir_no_ema")
class MCLFIRNoEMA(MCLFIR):
    summary = "ablation of mcl_fir: no EMA teacher, no distillation"

    def make_teacher(self, ctx):
        return None
