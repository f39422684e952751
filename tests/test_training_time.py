"""Training seconds: every training-side pass is timed (the strategy's hooks and their extra
passes, EWC's Fisher, MODC's centroids, the stored class centroids), so per increment
train + data wait + evaluation seconds are the wall time the loop spent on it."""

from __future__ import annotations

import time

import pytest

from cl_fir.engine.loop import TrainingLoop
from cl_fir.registry import get_strategy_class
from cl_fir.runner import build_loop, resolve_config

PAUSE = 0.3    # seconds each patched hook sleeps: far more than the loop's own untimed overhead


@pytest.mark.parametrize("strategy", ["ewc", "modc"])
def test_increment_seconds_add_up_to_the_wall_time_outside_data_and_evaluation(strategy, tiny_scenario,
                                                                               monkeypatch):
    cls = get_strategy_class(strategy)
    for hook in ("before_training_exp", "after_training_exp", "after_training_epoch"):
        original = getattr(cls, hook)

        def slow(self, ctx, _original=original):
            time.sleep(PAUSE)
            _original(self, ctx)

        monkeypatch.setattr(cls, hook, slow)
    wall: dict[int, float] = {}
    for name in ("train_increment", "store_centroids", "evaluate_increment"):
        original = getattr(TrainingLoop, name)

        def timed(self, *args, _original=original, **kwargs):
            start = time.perf_counter()
            try:
                return _original(self, *args, **kwargs)
            finally:
                index = self.increment.index
                wall[index] = wall.get(index, 0.0) + time.perf_counter() - start

        monkeypatch.setattr(TrainingLoop, name, timed)
    cfg = resolve_config(strategy, str(tiny_scenario), {"eval.mode": "prioritized"}, seed=1)
    loop = build_loop(cfg)
    loop.run()
    assert sorted(wall) == [0, 1]
    for c in loop.cost.increments:
        booked = c.train_seconds + c.data_wait_seconds + c.eval_seconds
        assert c.train_seconds >= 3 * PAUSE
        assert booked <= wall[c.increment] + 1e-6
        assert wall[c.increment] - booked < 0.05 + 0.02 * wall[c.increment], (c, wall)
