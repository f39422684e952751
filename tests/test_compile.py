"""torch.compile of the backbone in place (slow: inductor compiles on first use)."""

from __future__ import annotations

import pytest

from cl_fir.report.run_dir import load_run
from cl_fir.runner import execute_run, resolve_config


@pytest.mark.slow
def test_compiled_backbone_trains_and_checkpoints_with_plain_names(tiny_scenario, tmp_path):
    import torch

    cfg = resolve_config("mcl_fir", str(tiny_scenario), {"train.compile": True}, output_dir=str(tmp_path), seed=0)
    run = execute_run(cfg)
    assert load_run(run).complete
    state = torch.load(run / "checkpoints" / "increment_2.pt", weights_only=False)["loop"]["model"]
    assert not any("_orig_mod" in k for k in state)
