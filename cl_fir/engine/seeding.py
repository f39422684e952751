"""Seeds: one run seed, from which every random stream is derived deterministically.

A stream's seed for one epoch of one increment is ``derive_seed(run seed, increment, epoch,
stream)`` (:meth:`cl_fir.engine.context.StepContext.epoch_seed`). Two users of the same stream
at the same epoch would draw correlated numbers, so every stream is named once, here, in
:class:`Stream`, with the code that draws from it in :data:`STREAM_USERS`; a test checks
that each call site names a member and that its file is one of the member's users.
"""

from __future__ import annotations

import enum
import random

import numpy as np
import torch


@enum.unique
class Stream(enum.IntEnum):
    """Every random stream of a run; the values are part of the results (changing one
    changes what a run draws), so new streams take new values."""

    DOUBLETS = 0               # the epoch's training batches (a strategy's own sampler replaces the default one)
    STEP_DRAWS = 1             # torch's global generator per epoch: dropout and strategies' per-step draws
    FISHER_BATCHES = 2         # ewc: which doublets the Fisher pass draws
    REPLAY_DOUBLETS = 3        # replay: the doublets drawn from the buffer
    REPLAY_BUFFER = 4          # replay: which images enter the buffer
    MODC_VIEW_PAIRS = 5        # modc: the images drawn for view pairs
    MODC_PREDICTOR = 6         # modc: the SimSiam predictor's initial weights
    AUGMENTATION = 7           # per-sample augmentation seeds of the training loader
    FISHER_AUGMENTATION = 8    # ewc: augmentation seeds of the Fisher pass
    DIVISION_SCHEDULE = 9      # D&C: which cluster each batch comes from
    DIVISION_KMEANS = 10       # D&C: k-means and 2-means seeds


#: The files (relative to the repository root) that draw from each stream. Several files share
#: ``DOUBLETS`` only because a strategy's sampler replaces the default one, never runs beside it.
STREAM_USERS: dict[Stream, tuple[str, ...]] = {
    Stream.DOUBLETS: ("cl_fir/strategy.py", "strategies/replay.py", "strategies/modc/__init__.py"),
    Stream.STEP_DRAWS: ("cl_fir/engine/loop.py",),
    Stream.FISHER_BATCHES: ("strategies/ewc.py",),
    Stream.REPLAY_DOUBLETS: ("strategies/replay.py",),
    Stream.REPLAY_BUFFER: ("strategies/replay.py",),
    Stream.MODC_VIEW_PAIRS: ("strategies/modc/__init__.py",),
    Stream.MODC_PREDICTOR: ("strategies/modc/__init__.py",),
    Stream.AUGMENTATION: ("cl_fir/engine/loop.py",),
    Stream.FISHER_AUGMENTATION: ("strategies/ewc.py",),
    Stream.DIVISION_SCHEDULE: ("cl_fir/engine/data_division.py",),
    Stream.DIVISION_KMEANS: ("cl_fir/engine/data_division.py",),
}


def derive_seed(*parts: int) -> int:
    """A 63-bit seed derived from integer parts (run seed, increment, epoch, ...)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def worker_init(worker_id: int) -> None:
    """DataLoader worker: seed Python and NumPy from the worker's torch seed."""
    s = torch.initial_seed() % (2**32)
    random.seed(s)
    np.random.seed(s)


def rng_state() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
