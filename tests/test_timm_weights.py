"""--weights timm:TAG: timm's pretrained mechanism and cache, never the network in tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

REVISION = "0123456789abcdef0123456789abcdef01234567"
TAG = "test_resnet.r160_in1k"


@pytest.fixture(scope="module")
def hf_home(tmp_path_factory):
    """A Hugging Face cache holding (locally made) weights for timm's test_resnet.r160_in1k."""
    import timm
    import torch
    from safetensors.torch import save_file

    home = tmp_path_factory.mktemp("hf")
    repo = home / "hub" / f"models--timm--{TAG}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    (repo / "snapshots" / REVISION).mkdir(parents=True)
    torch.manual_seed(5)
    state = {k: v.contiguous() for k, v in timm.create_model("test_resnet").state_dict().items()}
    save_file(state, str(repo / "snapshots" / REVISION / "model.safetensors"))
    return home


def _offline_env(home):
    return {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def test_a_cached_timm_tag_loads_offline_and_is_recorded(hf_home, tiny_scenario, tmp_path):
    out = subprocess.run([sys.executable, "-m", "cl_fir", "run", "--strategy", "finetune", "--scenario",
                          str(tiny_scenario), "--weights", f"timm:{TAG}", "--output-dir", str(tmp_path), "--quiet"],
                         env=_offline_env(hf_home), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    weights = json.loads(next(tmp_path.rglob("run.json")).read_text())["weights"]
    assert weights["spec"] == f"timm:{TAG}" and weights["tag"] == TAG and weights["missing"] == []
    assert weights["file"].endswith("model.safetensors") and len(weights["sha256"]) == 64


def test_an_uncached_tag_offline_fails_in_one_line(hf_home, tiny_scenario, tmp_path):
    out = subprocess.run([sys.executable, "-m", "cl_fir", "run", "--strategy", "finetune", "--scenario",
                          str(tiny_scenario), "--weights", "timm:test_efficientnet.r160_in1k", "--output-dir",
                          str(tmp_path), "--quiet"], env=_offline_env(hf_home), capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    [line] = [ln for ln in out.stderr.splitlines() if ln.startswith("error:")]
    assert "timm:test_efficientnet.r160_in1k" in line and str(hf_home / "hub") in line and "--weights FILE" in line
