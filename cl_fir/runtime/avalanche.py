"""Every use of avalanche-lib 0.6.0 goes through this module.

Known breakages of avalanche-lib 0.6.0 on current torch (listed below) are worked
around here, locally, instead of patching avalanche globally:

* ``import avalanche`` warns that no QP solver is installed (only GEM needs one): the
  warning is silenced for the import.
* B3: the public ``as_classification_dataset`` lacks ``task_set``; datasets are built with
  the task-aware constructor instead.
* B1/B2: after ``with_classes_timeline`` the experiences' class fields are Python sets,
  which avalanche's own multi-head modules then use as tensor indices; they are turned
  into sorted lists.
"""

from __future__ import annotations

import warnings
from typing import Callable, Sequence


def _avalanche():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="no QP solver found")
        import avalanche.benchmarks.scenarios as scenarios
        from avalanche.benchmarks.scenarios.supervised import with_classes_timeline
        from avalanche.benchmarks.scenarios.task_aware import with_task_labels
        from avalanche.benchmarks.utils.classification_dataset import _make_taskaware_classification_dataset
    return scenarios, with_classes_timeline, with_task_labels, _make_taskaware_classification_dataset


def import_before_distributed_init() -> None:
    """Import Avalanche before ``init_process_group``: importing it creates default loggers,
    which raise on ranks other than 0 once a process group exists (avalanche-lib 0.6.0)."""
    _avalanche()


def task_aware_dataset(dataset, task_labels: Sequence[int], train_transform: Callable | None,
                       eval_transform: Callable | None):
    """Wrap a lazy dataset with ``targets`` as an Avalanche task-aware classification dataset.

    ``dataset.train()`` / ``dataset.eval()`` switch between the two transforms, as in any
    Avalanche benchmark; the initial group is ``train``.
    """
    _, _, _, make = _avalanche()
    return make(
        dataset,
        task_labels=list(task_labels),
        transform_groups={"train": (train_transform, None), "eval": (eval_transform, None)},
        initial_transform_group="train",
    )


def tagged_dataset(dataset, targets: Sequence[int], task_labels: Sequence[int]):
    """A generic Avalanche dataset over items that are not (x, y) pairs (composed triplets):
    items are returned unchanged, ``targets`` and ``targets_task_labels`` are data attributes
    (what ``with_classes_timeline`` and ``with_task_labels`` read). Transforms stay the
    wrapped dataset's own."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="no QP solver found")
        from avalanche.benchmarks.utils import AvalancheDataset, DataAttribute
    return AvalancheDataset([dataset], data_attributes=[DataAttribute(list(targets), "targets"),
                                                        DataAttribute(list(task_labels), "targets_task_labels")])


_CLASS_FIELDS = ("classes_in_this_experience", "previous_classes", "classes_seen_so_far", "future_classes")


def benchmark(train_datasets: list, test_datasets: list):
    """A real Avalanche ``CLScenario``: one experience per increment, with task labels and classes."""
    scenarios, with_classes_timeline, with_task_labels, _ = _avalanche()
    bm = with_task_labels(with_classes_timeline(
        scenarios.benchmark_from_datasets(train=train_datasets, test=test_datasets)))
    for stream in (bm.train_stream, bm.test_stream):
        for exp in stream:
            for name in _CLASS_FIELDS:
                value = getattr(exp, name, None)
                if isinstance(value, (set, frozenset)):
                    setattr(exp, name, sorted(value))
    return bm
