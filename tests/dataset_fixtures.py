"""Tiny on-disk copies of the real datasets, each in its exact distributed format.

Used by the reader, scenario, verify and end-to-end tests (formats in
docs/datasets.md): a few dozen 12x12 JPEGs per dataset, real attribute names and value counts, and the
files' quirks (DARN's missing final newline and candidate-first id blocks, DeepFashion's
tab-padded label_{valid,test}.txt, CSN's filenames list and triplet lists).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

FASHIONAI = [("skirt_length", 6), ("sleeve_length", 9), ("coat_length", 8), ("pant_length", 6),
             ("collar_design", 5), ("lapel_design", 5), ("neckline_design", 10), ("neck_design", 5)]
DARN = [("clothes category", 20), ("clothes button", 13), ("clothes color", 55), ("clothes length", 7),
        ("clothes pattern", 28), ("clothes shape", 11), ("collar shape", 26), ("sleeve length", 8),
        ("sleeve shape", 17)]
DEEPFASHION = [("texture-related", 156), ("fabric-related", 218), ("shape-related", 180), ("part-related", 216),
               ("style-related", 230)]
DARN_FOLDERS = ["50025145", "50048628", "50025233", "50025263", "50025265", "50025783", "50064676", "52040006",
                "50047357", "51606006", "50025784", "50025787", "51586095", "51604004", "50031397", "50025789",
                "50025788", "50025795", "50029627", "52318008"]
ZAPPOS_CATEGORIES = ["Shoes", "Boots", "Sandals", "Slippers"]
ZAPPOS_CONDITIONS = ["class", "closure", "gender", "heel"]
VALUES_USED = 3            # fixtures use values 0..2 of every attribute, so retrieval has relevant items


@dataclass
class Written:
    folder: Path
    lines: dict[str, int] = field(default_factory=dict)       # file name -> number of lines written
    extra: dict = field(default_factory=dict)


def write_lines(path: Path, lines: list[str], trailing_newline: bool = True) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + ("\n" if trailing_newline and lines else ""))


def write_image(path: Path, index: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(index)
    base = np.asarray([(index * 37) % 256, (index * 91) % 256, (index * 53) % 256], dtype=np.int16)
    pixels = np.clip(base + rng.integers(-20, 20, size=(12, 12, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(pixels).save(path, "JPEG", quality=90)


def merge_meta(root: Path, key: str, attributes: list[tuple[str, int]]) -> None:
    path = root / "meta.json"
    meta = json.loads(path.read_text()) if path.is_file() else {}
    meta[key] = {"ATTRIBUTES": [a for a, _ in attributes], "ATTRIBUTES_NUM": {a: n for a, n in attributes}}
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=1))


def _eval_lines(rows: list[tuple[int, int, int]], n_attr: int, candidates_first: bool, rng) -> tuple[list, list]:
    """Split (id, attr, value) rows into query/candidate lines, ~1 query in 4 per attribute,
    every query value having a same-value candidate."""
    queries, candidates = [], []
    for a in range(n_attr):
        seen = set()
        for k, r in enumerate(r for r in rows if r[1] == a):
            (queries if r[2] in seen and k % 4 == 3 else candidates).append(r)
            seen.add(r[2])
    if not candidates_first:
        rng.shuffle(queries)
        rng.shuffle(candidates)
    return queries, candidates


def _asen_split(folder: Path, split: str, names: list[str], start: int, queries=None, candidates=None,
                trailing_newline=True) -> dict[str, int]:
    for i, name in enumerate(names):
        write_image(folder / name, start + i)
    write_lines(folder / f"filenames_{split}.txt", names, trailing_newline)
    lines = {f"filenames_{split}.txt": len(names)}
    if queries is not None:
        for role, rows in (("query", queries), ("candidate", candidates)):
            write_lines(folder / f"{role}_{split}.txt", [f"{i} {a} {v}" for i, a, v in rows])
            lines[f"{role}_{split}.txt"] = len(rows)
    return lines


def make_fashionai(root: Path, per_attribute_train: int = 4, per_attribute_eval: int = 5, seed: int = 0) -> Written:
    """FashionAI: one attribute per image, ids interleaved in the query/candidate files."""
    rng = np.random.default_rng(seed)
    folder = root / "FashionAI"
    merge_meta(root, "FashionAI", FASHIONAI)
    out = Written(folder)

    def path(a, k, split):
        archive = 1 + (k % 2)
        digest = hashlib.md5(f"{seed}/{split}/{a}/{k}".encode()).hexdigest()
        return f"fashionAI_attributes_train{archive}/Images/{FASHIONAI[a][0]}_labels/{digest}.jpg"

    train = [(a, k) for a in range(len(FASHIONAI)) for k in range(per_attribute_train)]
    rng.shuffle(train)
    names = [path(a, k, "train") for a, k in train]
    out.lines.update(_asen_split(folder, "train", names, 0))
    write_lines(folder / "label_train.txt", [f"{i} {a} {k % VALUES_USED}" for i, (a, k) in enumerate(train)])
    out.lines["label_train.txt"] = len(train)
    for s, split in enumerate(("valid", "test")):
        items = [(a, k) for a in range(len(FASHIONAI)) for k in range(per_attribute_eval)]
        ids = rng.permutation(len(items))          # ids interleave attributes, as in the real files
        rows = [(int(ids[n]), a, k % VALUES_USED) for n, (a, k) in enumerate(items)]
        q, c = _eval_lines(rows, len(FASHIONAI), False, rng)
        names = [""] * len(items)
        for n, (a, k) in enumerate(items):
            names[ids[n]] = path(a, k, split)
        out.lines.update(_asen_split(folder, split, names, 1000 * (s + 1), q, c))
    return out


def make_darn(root: Path, n_train: int = 45, n_eval: int = 72, seed: int = 0) -> Written:
    """DARN: multi-label training lines, candidate ids first, no final newline in filenames files,
    and one query (recorded in ``extra['no_relevant_query']``) whose value has no candidate."""
    rng = np.random.default_rng(seed)
    folder = root / "DARN"
    merge_meta(root, "DARN", DARN)
    out = Written(folder)

    def name(category, k):
        return f"pic/{DARN_FOLDERS[category]}/{k:04d}_{k % 97:02d}_{k % 7}.jpg"

    cats = [k % VALUES_USED for k in range(n_train)]
    names = [name(c, 3000 + k) for k, c in enumerate(cats)]
    out.lines.update(_asen_split(folder, "train", names, 5000, trailing_newline=False))
    labels = []
    for i, c in enumerate(cats):
        others = rng.choice(np.arange(1, len(DARN)), size=int(rng.integers(1, 5)), replace=False)
        extra = [(int(a), (i + int(a)) % VALUES_USED) for a in sorted(others)]
        # make sure every attribute appears in training, with every value twice
        extra.append((1 + i % (len(DARN) - 1), i // (len(DARN) - 1) % VALUES_USED))
        pairs = [(0, c)] + list(dict(extra).items())
        labels.append(f"{i} " + " ".join(f"{a} {v}" for a, v in pairs))
    write_lines(folder / "label_train.txt", labels)
    out.lines["label_train.txt"] = len(labels)
    for s, split in enumerate(("valid", "test")):
        rows = [(i, i % len(DARN), (i // len(DARN)) % VALUES_USED) for i in range(n_eval)]
        q, c = _eval_lines(rows, len(DARN), True, rng)
        c_sorted = sorted(c)
        remap = {old[0]: new for new, old in enumerate(c_sorted + sorted(q))}
        cands = [(remap[i], a, v) for i, a, v in c_sorted]
        queries = [(remap[i], a, v) for i, a, v in sorted(q)]
        i0, a0, _ = queries[0]
        queries[0] = (i0, a0, VALUES_USED)          # no candidate has this value: AP = 0
        out.extra[f"no_relevant_query_{split}"] = queries[0]
        order = sorted(remap, key=remap.get)
        cat_of = {i: (v if a == 0 else i % VALUES_USED) for i, a, v in rows}
        split_names = [name(cat_of[old], 100 * (s + 1) + old) for old in order]
        out.lines.update(_asen_split(folder, split, split_names, 7000 + 100 * s, queries, cands,
                                     trailing_newline=False))
    return out


def make_deepfashion(root: Path, n_train: int = 30, n_eval: int = 30, seed: int = 0,
                     one_based_train_types: bool = False) -> Written:
    """DeepFashion: multi-label training lines (optionally with 1-based type codes), candidates
    first, and the unused tab-padded ``label_{valid,test}.txt``."""
    rng = np.random.default_rng(seed)
    folder = root / "DeepFashion"
    merge_meta(root, "DeepFashion", DEEPFASHION)
    out = Written(folder)
    items = ["Paisley_Floral_Print_Blouse", "Striped_Cotton_Tee", "Lace_Midi_Dress"]

    def name(k):
        return f"img/{items[k % len(items)]}/img_{k:08d}.jpg"

    names = [name(k) for k in range(n_train)]
    out.lines.update(_asen_split(folder, "train", names, 9000))
    base = 1 if one_based_train_types else 0
    labels = []
    for i in range(n_train):
        types = sorted({i % 5, (i + 2) % 5})
        labels.append(f"{i} " + " ".join(f"{t + base} {(i // 5) % VALUES_USED}" for t in types))
    write_lines(folder / "label_train.txt", labels)
    out.lines["label_train.txt"] = len(labels)
    for s, split in enumerate(("valid", "test")):
        rows = [(i, i % 5, (i // 5) % VALUES_USED) for i in range(n_eval)]
        q, c = _eval_lines(rows, 5, True, rng)
        remap = {old[0]: new for new, old in enumerate(sorted(c) + sorted(q))}
        cands = [(remap[i], a, v) for i, a, v in sorted(c)]
        queries = [(remap[i], a, v) for i, a, v in sorted(q)]
        split_names = [name(20000 * (s + 1) + k) for k in range(n_eval)]
        out.lines.update(_asen_split(folder, split, split_names, 11000 + 100 * s, queries, cands))
        width = 9
        padded = []
        for i in range(n_eval):
            fields = [str(i), str(1 + i % 5), str(200 + i)]
            padded.append("\t".join(fields + [""] * (width - len(fields))))
        write_lines(folder / f"label_{split}.txt", padded)
    return out


def make_zappos(root: Path, n_images: int = 40, triplets: dict | None = None, seed: int = 0,
                filenames_format: str = "json") -> Written:
    """Zappos50k in the CSN layout; triplets follow hidden per-condition labels (``extra['labels']``)."""
    triplets = triplets or {"train": 12, "val": 6, "test": 8}
    rng = np.random.default_rng(seed)
    folder = root / "Zappos50k"
    out = Written(folder)
    labels = {"class": [k % 4 for k in range(n_images)],
              **{c: rng.integers(0, 2, size=n_images).tolist() for c in ZAPPOS_CONDITIONS[1:]}}
    names = []
    for k in range(n_images):
        rel = f"{ZAPPOS_CATEGORIES[labels['class'][k]]}/Sub{k % 3}/Brand{k % 5}/{7000 + k}.{k}.jpg"
        write_image(folder / "ut-zap50k-images" / rel, 20000 + k)
        names.append(rel)
    if filenames_format == "json":
        (folder / "filenames.json").write_text(json.dumps(names))
    else:
        write_lines(folder / "filenames.json", names)
    out.lines["filenames.json"] = n_images
    for cond in ZAPPOS_CONDITIONS:
        lab = np.asarray(labels[cond])
        for split, n in triplets.items():
            lines = []
            while len(lines) < n:
                a, f, c = (int(x) for x in rng.choice(n_images, size=3, replace=False))
                if lab[a] == lab[c] and lab[a] != lab[f]:
                    lines.append(f"{a} {f} {c}")
            write_lines(folder / "tripletlists" / f"{cond}_tripletlist_{split}.txt", lines)
            out.lines[f"{cond}_tripletlist_{split}.txt"] = n
    out.extra["labels"] = labels
    return out


def make_all(root: Path) -> dict[str, Written]:
    return {"FashionAI": make_fashionai(root), "DARN": make_darn(root), "DeepFashion": make_deepfashion(root),
            "Zappos50k": make_zappos(root)}
