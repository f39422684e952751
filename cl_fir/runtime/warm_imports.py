"""Importing this module imports the libraries every run needs: torch, torchvision, timm and
avalanche-lib (with its solver warning silenced, as everywhere in cl-fir).

It exists for the fork server of ``cl-fir sweep`` (:mod:`cl_fir.runtime.fork_server`): a process forked after this
import starts a run without paying those imports again (about 8 s of CPU per process on
the 2-core reference machine, 3 s of it avalanche-lib's). Importing runs no tensor code,
so no thread pool exists yet when the server forks.
"""

from __future__ import annotations

import timm  # noqa: F401  (imported for its side effect: the module is then loaded)
import torch  # noqa: F401
import torchvision  # noqa: F401

from cl_fir.runtime.avalanche import import_before_distributed_init

import_before_distributed_init()
