"""Ablation: MCL-FIR with one attention head shared by every attribute.

The head is never frozen (it serves the new attributes too); distillation from the EMA
teacher still goes through the old attributes. The difference to ``mcl_fir`` measures
what the per-increment heads buy.
"""

from cl_fir.registry import register_strategy
from cl_fir.strategies.mcl_fir import MCLFIR


@register_strategy("mcl_fir_single_head")
class MCLFIRSingleHead(MCLFIR):
    summary = "ablation of mcl_fir: one attention head shared by all attributes"

    def head_of_attribute(self, scenario):
        return [0] * scenario.meta.num_attributes
