"""Stopping a run on request (a signal) at a step every process agrees on.

In one process a request is acted on at once. Under torchrun the processes compare requests
in a collective whose value the host reads (a wait for the GPU), so they poll every
:data:`STOP_POLL_STEPS` steps and at the end of each increment, and all of them checkpoint
and stop at the same step.
"""

from __future__ import annotations

from cl_fir.runtime.distributed import DistributedContext

#: under torchrun, ranks compare stop requests every this many steps (a host wait each time)
STOP_POLL_STEPS = 16


class RunInterrupted(KeyboardInterrupt):
    """Raised after a signal-requested checkpoint; the run is resumable."""


class StopAgreement:
    def __init__(self, dist: DistributedContext):
        self.dist = dist
        self.requested: str | None = None
        self._polled: str | None = None      # torchrun: the last agreed request

    def request(self, reason: str) -> None:
        self.requested = reason

    def agreed(self, poll: bool) -> str | None:
        """The stop request every process acts on: this process's, at once, in one process;
        under torchrun any process's, as found by the last poll (``poll`` runs one)."""
        if not self.dist.enabled:
            return self.requested
        if poll:
            self._polled = self.dist.any_flag(self.requested)
        return self._polled

    @staticmethod
    def stop_if(stop: str | None) -> None:
        if stop:
            raise RunInterrupted(f"stopped by {stop}; continue with: cl-fir run --resume <run dir>")
