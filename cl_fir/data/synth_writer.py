"""Writing a generated attribute dataset in the ASEN/FashionAI meta format.

Shared by the synthetic generators: they differ in what an image shows, not in how the
split files are laid out. Each split annotates ``train_per_attribute`` (train) or
``queries_per_attribute`` + ``candidates_per_attribute`` (valid, test) images per attribute,
one (attribute, value) pair per image as in FashionAI, values stratified so that every
value occurs (with at least one candidate per evaluation split), image order shuffled.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Callable

import numpy as np

SPLIT_IDS = {"train": 0, "valid": 1, "test": 2}


def plan_split(cfg, attributes: dict[str, list[str]], split: str) -> list[tuple[int, int, bool]]:
    """``(attribute, value, is_query)`` per image of ``split``, in image order."""
    rng = np.random.default_rng([cfg.seed, SPLIT_IDS[split], 10**6])
    rows = []
    for a, name in enumerate(attributes):
        n_values = len(attributes[name])
        counts = {False: cfg.train_per_attribute} if split == "train" else {
            True: cfg.queries_per_attribute, False: cfg.candidates_per_attribute}
        for is_query, count in sorted(counts.items()):
            vals = rng.permutation(np.arange(count) % n_values)
            rows.extend((a, int(v), is_query) for v in vals)
    order = rng.permutation(len(rows))
    return [rows[i] for i in order]


def write_asen_copy(cfg, root: Path, key: str, attributes: dict[str, list[str]], generator: str, version: int,
                    render_one: Callable[[tuple], None], workers: int | None = None, progress=None) -> None:
    """Render every image (``render_one((seed, split, index, attribute, value, image_size,
    nuisance, path))``, a picklable function; in a process pool for large copies) and write the
    split files under ``root/key``; ``root/meta.json`` is written last (it marks a complete copy)."""
    ds_dir = root / key
    jobs = []
    files: dict[str, list[str]] = {}
    for split in SPLIT_IDS:
        (ds_dir / "images" / split).mkdir(parents=True, exist_ok=True)
        names, labels, queries, candidates = [], [], [], []
        for i, (a, v, is_query) in enumerate(plan_split(cfg, attributes, split)):
            rel = f"images/{split}/{i:06d}.png"
            names.append(rel)
            jobs.append((cfg.seed, split, i, a, v, cfg.image_size, cfg.nuisance, str(ds_dir / rel)))
            line = f"{i} {a} {v}"
            if split == "train":
                labels.append(line)
            else:
                (queries if is_query else candidates).append(line)
        files[f"filenames_{split}.txt"] = names
        if split == "train":
            files["label_train.txt"] = labels
        else:
            files[f"query_{split}.txt"] = queries
            files[f"candidate_{split}.txt"] = candidates
    workers = workers or max(1, min(4, os.cpu_count() or 1))
    if workers == 1 or len(jobs) < 256:   # a process pool costs more than it saves on tiny copies
        for job in jobs:
            render_one(job)
            if progress:
                progress()
    else:
        with ProcessPoolExecutor(max_workers=workers) as pool:
            for _ in pool.map(render_one, jobs, chunksize=64):
                if progress:
                    progress()
    for fname, lines in files.items():
        (ds_dir / fname).write_text("\n".join(lines) + "\n")
    (ds_dir / "generator.json").write_text(json.dumps(
        {"generator": generator, "version": version, **asdict(cfg)}, indent=2) + "\n")
    meta = {key: {"ATTRIBUTES": list(attributes), "ATTRIBUTES_NUM": {a: len(v) for a, v in attributes.items()},
                  "ATTRIBUTES_VALUES": attributes}}
    (root / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
