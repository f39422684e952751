"""Ablation: MCL-FIR whose teacher is the model as it was before the increment.

At each increment's start the EMA teacher is re-copied from the student and held fixed for
the increment (``teacher_reset = freeze``); everything else is ``mcl_fir``. In ``mcl_fir`` the
teacher follows the student every step across increments, so by the end of an increment the
weights it began with hold m^steps of the teacher (0.95^64 = 0.04 on synth-4inc). The
difference to ``mcl_fir`` measures what anchoring the teacher to the previous model buys.
"""

from __future__ import annotations

from dataclasses import dataclass

from cl_fir.registry import register_strategy
from cl_fir.strategies.mcl_fir import MCLFIR


@register_strategy("mcl_fir_teacher_reset")
class MCLFIRTeacherReset(MCLFIR):
    summary = "ablation of mcl_fir: the teacher is the student at the increment's start, held fixed for it"

    @dataclass
    class Options(MCLFIR.Options):
        teacher_reset: str = "freeze"    # none | copy: re-copy the student at each increment | freeze: and hold it
