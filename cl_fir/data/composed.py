"""Readers of the composed image retrieval datasets (reference image + modification text
-> target image), in their distributed formats (``docs/datasets.md``).

Each reader returns a :class:`ComposedSplit`: the split's queries (reference image,
modification texts, target image or the set of acceptable targets, category) and, per
category, the gallery the queries are ranked against. Images are keys; ``image_path``
maps a key to its file. Problems go through a :class:`~cl_fir.data.problems.ProblemLog`
and name the file and the line (text files) or the entry (JSON lists: ``entry N``, 1-based).

* **FashionIQ** (``fashionIQ/``): ``captions/cap.<cat>.<split>.json`` (list of
  ``{"target", "candidate", "captions"}``, the candidate being the reference; test files
  have no target) and ``image_splits/split.<cat>.<split>.json``; images ``images/<ASIN>.<ext>``.
  Galleries: ``"split"`` (the category's split file, the original protocol) or
  ``"val"`` (the union of references and targets in the caption file, VAL's protocol).
  The 3,302 ASINs shared by shirt and toptee are kept and counted
  (``shared_images = "keep"``) or removed from both categories' queries and galleries
  (``"drop"``), so no image is seen in two tasks.
* **Shoes** (``shoes/``): ``relative_captions_shoes.json`` (``ImageName`` = target,
  ``ReferenceImageName`` = reference, ``RelativeCaption``), ``train_im_names.txt`` and
  ``eval_im_names.txt``; images ``attributedata/<category>/0/<name>`` (``/1/`` also looked
  at); category from ``img_(womens_.+)_<n>.jpg``; a triplet belongs to a split when both
  images are in its list and to its **target**'s category. Gallery: every image of the
  eval list (ARTEMIS), one shared gallery for all categories.
* **Fashion200k** (``fashion200k/``): ``labels/<cat>_<split>_detect_all.txt`` lines
  ``path<TAB>score<TAB>description`` (a leading ``women/`` kept or added as on disk);
  captions normalised as TIRG does; test queries from ``test_queries.txt`` (``source
  target`` paths) with the text "replace <word of source only> with <word of target
  only>"; any gallery image whose caption equals the target's caption is a correct
  answer. Training pairs are built as TIRG does: two images whose captions differ in
  exactly one word, of the same category.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from cl_fir.data.problems import ProblemLog

FASHIONIQ_CATEGORIES = ("dress", "shirt", "toptee")
SHOES_CATEGORIES = ("womens_athletic_shoes", "womens_boots", "womens_clogs", "womens_flats", "womens_high_heels",
                    "womens_pumps", "womens_rain_boots", "womens_sneakers", "womens_stiletto",
                    "womens_wedding_shoes")
FASHION200K_CATEGORIES = ("dress", "jacket", "pants", "skirt", "top")
_SHOES_NAME = re.compile(r"img_(womens_.+)_\d+\.jpe?g$", re.IGNORECASE)


@dataclass
class ComposedQuery:
    reference: str
    texts: list[str]                 # modification texts (FashionIQ: two captions)
    targets: list[str]               # acceptable answers (one, or several for Fashion200k); empty: unknown
    category: str


@dataclass
class ComposedSplit:
    dataset: str
    split: str
    queries: list[ComposedQuery]
    galleries: dict[str, list[str]]                  # category -> image keys ranked for its queries
    image_path: dict[str, Path]
    counts: dict[str, int] = field(default_factory=dict)   # what was dropped or shared, for the report

    def categories(self) -> list[str]:
        return sorted({q.category for q in self.queries})


def _load_json(path: Path, problems: ProblemLog):
    if not path.is_file():
        problems.error("missing-file", path, None, "missing")
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        problems.error("malformed", path, getattr(exc, "lineno", None), f"not valid JSON ({exc})")
        return None


def _string_list(data, path: Path, problems: ProblemLog, what: str) -> list[str]:
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        problems.error("malformed", path, None, f"expected a JSON list of {what} strings")
        return []
    return data


# ------------------------------------------------------------------ FashionIQ


def read_fashioniq(root: Path, split: str, categories=FASHIONIQ_CATEGORIES, gallery: str = "split",
                   shared_images: str = "keep", extension: str = "jpg",
                   problems: ProblemLog | None = None) -> ComposedSplit:
    problems = problems or ProblemLog()
    root = Path(root)
    if gallery not in ("split", "val"):
        raise ValueError(f"FashionIQ gallery must be 'split' or 'val', got {gallery!r}")
    if shared_images not in ("keep", "drop"):
        raise ValueError(f"FashionIQ shared_images must be 'keep' or 'drop', got {shared_images!r}")
    queries: list[ComposedQuery] = []
    split_images: dict[str, list[str]] = {}
    caption_images: dict[str, list[str]] = {}
    for cat in categories:
        cap_path = root / "captions" / f"cap.{cat}.{split}.json"
        split_path = root / "image_splits" / f"split.{cat}.{split}.json"
        split_images[cat] = _string_list(_load_json(split_path, problems), split_path, problems, "ASIN")
        in_split = set(split_images[cat])
        entries = _load_json(cap_path, problems)
        if entries is None:
            continue
        if not isinstance(entries, list):
            problems.error("malformed", cap_path, None, "expected a JSON list of {target, candidate, captions} objects")
            continue
        seen: list[str] = []
        for n, entry in enumerate(entries, start=1):
            where = f"entry {n}"
            if not isinstance(entry, dict) or not isinstance(entry.get("candidate"), str):
                problems.error("malformed", cap_path, None, f"{where}: expected an object with a string 'candidate'")
                continue
            caps = entry.get("captions")
            if not isinstance(caps, list) or not caps or not all(isinstance(c, str) for c in caps):
                problems.error("malformed", cap_path, None, f"{where}: expected 'captions' as a non-empty list of strings")
                continue
            target = entry.get("target")
            if target is not None and not isinstance(target, str):
                problems.error("malformed", cap_path, None, f"{where}: 'target' must be a string")
                continue
            if target is None and split != "test":
                problems.error("malformed", cap_path, None, f"{where}: no 'target' (only the test split has none)")
                continue
            for key in (entry["candidate"], target):
                if key is not None and in_split and key not in in_split:
                    problems.warning("not-in-split", cap_path, None, f"{where}: {key} is not in {split_path.name}")
            queries.append(ComposedQuery(entry["candidate"], list(caps), [target] if target else [], cat))
            seen += [entry["candidate"]] + ([target] if target else [])
        caption_images[cat] = list(dict.fromkeys(seen))
    galleries = split_images if gallery == "split" else caption_images
    counts = {}
    if len(categories) > 1:
        owners = defaultdict(set)
        for cat, keys in split_images.items():
            for k in keys:
                owners[k].add(cat)
        shared = {k for k, cats in owners.items() if len(cats) > 1}
        counts["shared_images"] = len(shared)
        if shared_images == "drop" and shared:
            before = len(queries)
            queries = [q for q in queries if q.reference not in shared and not set(q.targets) & shared]
            galleries = {cat: [k for k in keys if k not in shared] for cat, keys in galleries.items()}
            counts["queries_dropped_shared"] = before - len(queries)
    images = {k for keys in galleries.values() for k in keys} | {q.reference for q in queries} | \
        {t for q in queries for t in q.targets}
    image_path = {k: root / "images" / f"{k}.{extension}" for k in images}
    return ComposedSplit("fashioniq", split, queries, galleries, image_path, counts)


# ------------------------------------------------------------------ Shoes


def shoes_category(name: str) -> str | None:
    m = _SHOES_NAME.search(name)
    return m.group(1).lower() if m else None


def read_shoes(root: Path, split: str, problems: ProblemLog | None = None) -> ComposedSplit:
    """``split``: ``train`` or ``eval`` (the official name lists)."""
    problems = problems or ProblemLog()
    root = Path(root)
    if split not in ("train", "eval"):
        raise ValueError(f"Shoes split must be 'train' or 'eval', got {split!r}")
    names_path = root / f"{split}_im_names.txt"
    if not names_path.is_file():
        problems.error("missing-file", names_path, None, "missing")
        names = []
    else:
        names = [line.strip() for line in names_path.read_text(encoding="utf-8").splitlines() if line.strip()]
    for n, name in enumerate(names, start=1):
        if shoes_category(name) is None:
            problems.error("malformed", names_path, n, f"expected a name like img_womens_<category>_<n>.jpg, got {name!r}")
    in_split = set(names)
    cap_path = root / "relative_captions_shoes.json"
    entries = _load_json(cap_path, problems) or []
    if not isinstance(entries, list):
        problems.error("malformed", cap_path, None, "expected a JSON list of {ImageName, ReferenceImageName, "
                                                    "RelativeCaption} objects")
        entries = []
    queries = []
    crossing = 0
    for n, entry in enumerate(entries, start=1):
        keys = ("ImageName", "ReferenceImageName", "RelativeCaption")
        if not isinstance(entry, dict) or not all(isinstance(entry.get(k), str) for k in keys):
            problems.error("malformed", cap_path, None, f"entry {n}: expected string fields {', '.join(keys)}")
            continue
        target, reference = entry["ImageName"], entry["ReferenceImageName"]
        inside = (target in in_split, reference in in_split)
        if all(inside):
            category = shoes_category(target)
            if category is None:
                problems.error("malformed", cap_path, None, f"entry {n}: no category in the name {target!r}")
                continue
            queries.append(ComposedQuery(reference, [entry["RelativeCaption"]], [target], category))
        elif any(inside):
            crossing += 1
    gallery = sorted(in_split, key=names.index) if split == "eval" else list(names)
    image_path = {}
    for name in set(names) | {q.reference for q in queries}:
        cat = shoes_category(name) or ""
        folder = root / "attributedata" / cat
        path = folder / "0" / name
        image_path[name] = path if path.exists() or not (folder / "1" / name).exists() else folder / "1" / name
    return ComposedSplit("shoes", split, queries, {"*": gallery}, image_path, {"triplets_crossing_splits": crossing})


# ------------------------------------------------------------------ Fashion200k


def normalise_caption(text: str) -> str:
    """TIRG's caption post-processing before any comparison."""
    for sym, word in ((".", "dotmark"), ("?", "questionmark"), ("&", "andmark"), ("*", "starmark")):
        text = text.replace(sym, word)
    return " ".join(text.strip().split())


def modification_text(source: str, target: str) -> str | None:
    """'replace A with B' when the captions differ in exactly one word (TIRG), else None."""
    a, b = source.split(), target.split()
    only_a = [w for w in a if w not in b]
    only_b = [w for w in b if w not in a]
    if len(only_a) == 1 and len(only_b) == 1 and len(a) == len(b):
        return f"replace {only_a[0]} with {only_b[0]}"
    return None


def _fashion200k_labels(root: Path, split: str, categories, problems: ProblemLog) -> dict[str, tuple[str, str]]:
    """image key (path relative to the dataset folder) -> (category, normalised caption)."""
    out = {}
    for cat in categories:
        path = root / "labels" / f"{cat}_{split}_detect_all.txt"
        if not path.is_file():
            problems.error("missing-file", path, None, "missing")
            continue
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) < 3 or not fields[0].strip():
                problems.error("malformed", path, n, f"expected 'path<TAB>detection score<TAB>description', "
                                                     f"got {line.strip()!r}")
                continue
            try:
                float(fields[1])
            except ValueError:
                problems.error("malformed", path, n, f"detection score {fields[1]!r} is not a number")
                continue
            out[_f200k_key(fields[0].strip())] = (cat, normalise_caption(fields[2]))
    return out


def _f200k_key(path: str) -> str:
    return path if path.startswith("women/") else f"women/{path}"


def read_fashion200k(root: Path, split: str, categories=FASHION200K_CATEGORIES,
                     problems: ProblemLog | None = None, max_pairs_per_caption: int = 4) -> ComposedSplit:
    problems = problems or ProblemLog()
    root = Path(root)
    labels = _fashion200k_labels(root, split, categories, problems)
    queries: list[ComposedQuery] = []
    by_caption: dict[str, list[str]] = defaultdict(list)
    for key, (_cat, cap) in labels.items():
        by_caption[cap].append(key)
    if split == "test":
        qpath = root / "test_queries.txt"
        if not qpath.is_file():
            problems.error("missing-file", qpath, None, "missing")
        else:
            for n, line in enumerate(qpath.read_text(encoding="utf-8").splitlines(), start=1):
                fields = line.split()
                if not fields:
                    continue
                if len(fields) != 2:
                    problems.error("malformed", qpath, n, f"expected 'source_path target_path', got {line.strip()!r}")
                    continue
                src, tgt = (_f200k_key(f) for f in fields)
                missing = [p for p in (src, tgt) if p not in labels]
                if missing:
                    problems.error("unknown-image", qpath, n, f"{missing[0]} is not in the test label files")
                    continue
                text = modification_text(labels[src][1], labels[tgt][1])
                if text is None:
                    problems.warning("not-one-word", qpath, n, "source and target captions do not differ in exactly "
                                                               "one word; query kept with an empty text")
                    text = ""
                queries.append(ComposedQuery(src, [text], by_caption[labels[tgt][1]], labels[tgt][0]))
    else:
        queries = _one_word_pairs(labels, by_caption, max_pairs_per_caption)
    galleries: dict[str, list[str]] = {"*": list(labels)}
    image_path = {k: root / k for k in labels}
    if labels and not any(p.exists() for p in list(image_path.values())[:20]):
        image_path = {k: root / k[len("women/"):] for k in labels}   # ARTEMIS layout: 'women/' stripped
    return ComposedSplit("fashion200k", split, queries, galleries, image_path)


def _one_word_pairs(labels, by_caption, per_caption: int) -> list[ComposedQuery]:
    """Training queries: for every caption, up to ``per_caption`` captions of the same
    category that differ in exactly one word (found through one-word-wildcard buckets)."""
    buckets: dict[tuple[str, int, str], list[str]] = defaultdict(list)
    category_of = {}
    for cap, keys in sorted(by_caption.items()):
        cat = labels[keys[0]][0]
        category_of[cap] = cat
        words = cap.split()
        for i in range(len(words)):
            buckets[(cat, i, " ".join(words[:i] + ["*"] + words[i + 1:]))].append(cap)
    queries = []
    for cap, keys in sorted(by_caption.items()):
        words = cap.split()
        partners = []
        for i in range(len(words)):
            for other in buckets[(category_of[cap], i, " ".join(words[:i] + ["*"] + words[i + 1:]))]:
                if other != cap and len(partners) < per_caption:
                    partners.append(other)
        for other in partners:
            text = modification_text(cap, other)
            if text:
                queries.append(ComposedQuery(keys[0], [text], by_caption[other], category_of[cap]))
    return queries
