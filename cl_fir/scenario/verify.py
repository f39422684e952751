"""``cl-fir data verify``: is a dataset on disk usable, and what would a run skip?

Checks the layout, compares line counts with the published split (``docs/datasets.md``),
parses every label file collecting *all* problems (out-of-range labels, malformed and
duplicate lines, each with file and line), checks every listed image (by default it
decodes them fully), and works out what a run would skip. The dataset is *usable* when
no label file has an error and, after skipping bad images, every attribute still has
training doublets and a non-empty evaluation set. Line counts that differ from the
published split are warnings: the data is usable, but results are not comparable with
the papers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cl_fir.data.asen_meta import EVAL_SPLITS, AsenMetaDataset
from cl_fir.data.image_check import check_images, reason_counts
from cl_fir.data.problems import ProblemLog
from cl_fir.data.zappos import CONDITIONS, SPLIT_FILES, ZapposDataset
from cl_fir.errors import CLFirError, ConfigError
from cl_fir.scenario.spec import available_scenarios, load_spec

#: Published line counts (non-empty lines), verified on the released split files
#: (docs/datasets.md). DARN's and DeepFashion's train lists are not
#: published in a verified form and are not compared.
EXPECTED_LINES = {
    "FashionAI": {"filenames_train.txt": 144_335, "label_train.txt": 144_335,
                  "filenames_valid.txt": 18_000, "filenames_test.txt": 18_000,
                  "query_valid.txt": 3_600, "candidate_valid.txt": 14_400,
                  "query_test.txt": 3_600, "candidate_test.txt": 14_400},
    "DARN": {"filenames_valid.txt": 21_461, "filenames_test.txt": 21_461,
             "query_valid.txt": 4_293, "candidate_valid.txt": 17_168,
             "query_test.txt": 4_293, "candidate_test.txt": 17_168},
    "DeepFashion": {"filenames_valid.txt": 27_625, "filenames_test.txt": 27_625,
                    "query_valid.txt": 5_525, "candidate_valid.txt": 22_100,
                    "query_test.txt": 5_525, "candidate_test.txt": 22_100},
    "Zappos50k": {"filenames.json": 50_025},
    # composed retrieval (docs/datasets.md): JSON files count entries
    "FashionIQ": {**{f"captions/cap.{c}.{s}.json": n for c, counts in
                     {"dress": (5_985, 2_017, 2_024), "shirt": (5_988, 2_038, 2_038),
                      "toptee": (6_027, 1_961, 2_056)}.items() for s, n in zip(("train", "val", "test"), counts)},
                  **{f"image_splits/split.{c}.{s}.json": n for c, counts in
                     {"dress": (11_452, 3_817, 3_818), "shirt": (19_036, 6_346, 6_346),
                      "toptee": (16_121, 5_373, 5_374)}.items() for s, n in zip(("train", "val", "test"), counts)}},
    "Shoes": {"relative_captions_shoes.json": 10_751, "train_im_names.txt": 10_000, "eval_im_names.txt": 4_658},
    "Fashion200k": {"labels/*_train_detect_all.txt (all)": 172_049, "labels/*_test_detect_all.txt (all)": 29_789,
                    "test_queries.txt": 33_480},
}

#: Names accepted by ``cl-fir data verify`` (case-insensitive) -> (reader, dataset key).
DATASETS = {
    "fashionai": ("asen-meta", "FashionAI"),
    "darn": ("asen-meta", "DARN"),
    "deepfashion": ("asen-meta", "DeepFashion"),
    "zappos50k": ("zappos", "Zappos50k"),
    "zappos": ("zappos", "Zappos50k"),
    "fashioniq": ("composed", "FashionIQ"),
    "shoes": ("composed", "Shoes"),
    "fashion200k": ("composed", "Fashion200k"),
}

#: composed datasets: folder under the data root, and the (train, evaluation) splits a run reads
COMPOSED = {"FashionIQ": ("fashionIQ", ("train", "val")), "Shoes": ("shoes", ("train", "eval")),
            "Fashion200k": ("fashion200k", ("train", "test"))}


@dataclass
class FileCount:
    name: str
    lines: int | None          # None: missing
    expected: int | None


@dataclass
class VerifyReport:
    dataset: str
    folder: str
    level: str
    files: list[FileCount] = field(default_factory=list)
    problems: ProblemLog = field(default_factory=lambda: ProblemLog(collect=True))
    images_checked: int = 0
    bad_images: dict[str, str] = field(default_factory=dict)       # path -> reason
    skipped: dict[str, int] = field(default_factory=dict)          # what a run would skip
    tasks: list[dict] = field(default_factory=list)                # per attribute: usable counts
    unusable: list[str] = field(default_factory=list)              # reasons the dataset is not usable
    notes: list[str] = field(default_factory=list)

    @property
    def usable(self) -> bool:
        return not self.unusable

    def count_mismatches(self) -> list[FileCount]:
        return [f for f in self.files if f.expected is not None and f.lines is not None and f.lines != f.expected]

    def to_dict(self) -> dict:
        return {
            "dataset": self.dataset, "folder": self.folder, "image_check": self.level, "usable": self.usable,
            "unusable_because": self.unusable,
            "files": [{"file": f.name, "lines": f.lines, "expected": f.expected} for f in self.files],
            "errors": [str(p) for p in self.problems.errors],
            "warnings": [str(p) for p in self.problems.warnings],
            "images_checked": self.images_checked, "bad_images": self.bad_images,
            "would_skip": self.skipped, "tasks": self.tasks, "notes": self.notes,
        }


def resolve_names(name: str) -> list[tuple[str, str]]:
    """Datasets named by a dataset name or a scenario (``fashionai-4inc`` -> FashionAI)."""
    low = name.lower()
    if low in DATASETS:
        return [DATASETS[low]]
    if name in available_scenarios() or name.endswith(".toml"):
        spec = load_spec(name)
        reader = spec.dataset.get("reader")
        if reader == "zappos":
            return [("zappos", spec.dataset.get("key", "Zappos50k"))]
        if reader == "asen-meta":
            keys = spec.dataset.get("keys") or [spec.dataset.get("key")]
            return [("asen-meta", k) for k in keys]
        if reader in ("fashioniq", "shoes", "fashion200k"):
            return [("composed", {"fashioniq": "FashionIQ", "shoes": "Shoes", "fashion200k": "Fashion200k"}[reader])]
        raise ConfigError(f"scenario {name!r} uses the {reader!r} reader, which generates its data; nothing to verify")
    raise ConfigError(f"unknown dataset {name!r}; expected one of fashionai, darn, deepfashion, zappos50k, "
                      f"fashioniq, shoes, fashion200k or a scenario name")


def verify(reader: str, key: str, data_root: str | Path, level: str = "decode", cache_dir: Path | None = None,
           progress_factory=None) -> VerifyReport:
    if reader == "zappos":
        return _verify_zappos(Path(data_root), key, level, cache_dir, progress_factory)
    if reader == "composed":
        return _verify_composed(Path(data_root), key, level, cache_dir, progress_factory)
    return _verify_asen(Path(data_root), key, level, cache_dir, progress_factory)


def _count(path: Path) -> int | None:
    if not path.is_file():
        return None
    try:
        return sum(1 for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip())
    except OSError:
        return None


def _check(report: VerifyReport, paths: list[Path], cache_dir, progress_factory) -> set[int]:
    check = check_images(paths, report.level, cache_dir, progress_factory)
    report.images_checked += len(paths)
    for k, reason in check.bad.items():
        report.bad_images[str(paths[k])] = reason
    if check.other_extension:
        report.notes.append(f"{check.other_extension} images exist only under another extension (.jpg/.png); "
                            f"runs use those files")
    return set(check.bad)


def _open(reader_cls, root: Path, key: str, level: str):
    """The dataset read with a collecting problem log, or None and a report saying why not."""
    log = ProblemLog(collect=True)
    try:
        ds = reader_cls(root, key, log)
    except CLFirError as exc:
        report = VerifyReport(key, str(root / key), level, problems=log)
        report.unusable.append(str(exc))
        return None, report
    return ds, VerifyReport(key, str(ds.folder), level, problems=log)


def _verify_asen(root: Path, key: str, level, cache_dir, progress_factory) -> VerifyReport:
    ds, report = _open(AsenMetaDataset, root, key, level)
    if ds is None:
        return report
    log = report.problems
    expected = EXPECTED_LINES.get(key, {})
    names = [f"filenames_{s}.txt" for s in ("train", "valid", "test")] + ["label_train.txt"] + \
        [f"{r}_{s}.txt" for s in EVAL_SPLITS for r in ("query", "candidate")]
    report.files = [FileCount(n, _count(ds.folder / n), expected.get(n)) for n in names]
    for n in ("label_valid.txt", "label_test.txt"):   # DeepFashion extras, not read by the protocol
        if (ds.folder / n).is_file():
            report.notes.append(f"{n} present (not used by the ASEN evaluation)")
    train = ds.train_samples()
    evals = {(s, r): ds.eval_samples(s, r) for s in EVAL_SPLITS for r in ("query", "candidate")}
    if log.errors:
        kinds = ", ".join(f"{n} {k}" for k, n in log.counts("error").items())
        report.unusable.append(f"label files have errors ({kinds})")

    bad: dict[str, set[int]] = {}
    for split in ("train",) + EVAL_SPLITS:
        bad[split] = _check(report, ds.image_paths(split), cache_dir, progress_factory)

    def keep(table, split):
        return table.subset(~np.isin(table.image_ids, np.fromiter(bad[split], dtype=np.int64)))

    usable_train = keep(train, "train")
    report.skipped["train rows"] = len(train) - len(usable_train)
    usable_eval = {}
    for (split, role), table in evals.items():
        usable_eval[(split, role)] = keep(table, split)
        report.skipped[f"{role} rows ({split})"] = len(table) - len(usable_eval[(split, role)])
        ids = table.image_ids
        if role == "query":
            other = evals[(split, "candidate")]
            overlap = set(zip(ids.tolist(), table.attributes.tolist())) & \
                set(zip(other.image_ids.tolist(), other.attributes.tolist()))
            if overlap:
                log.warning("overlap", ds.folder / f"query_{split}.txt", None,
                            f"{len(overlap)} (image, attribute) pairs are both queries and candidates")
    for a, name in enumerate(ds.meta.names):
        t = usable_train.for_attributes([a])
        _, counts = np.unique(t.values, return_counts=True)
        row = {"attribute": name, "values": ds.meta.num_values[a], "train_rows": len(t),
               "train_values_with_pairs": int((counts >= 2).sum())}
        for split in EVAL_SPLITS:
            q = usable_eval[(split, "query")].for_attributes([a])
            c = usable_eval[(split, "candidate")].for_attributes([a])
            row[f"queries_{split}"], row[f"candidates_{split}"] = len(q), len(c)
            row[f"queries_without_relevant_{split}"] = int((~np.isin(q.values, c.values)).sum())
            if len(q) == 0 or len(c) == 0:
                report.unusable.append(f"attribute {name!r} has {len(q)} queries and {len(c)} candidates with "
                                       f"usable images in split {split!r}")
        if row["train_values_with_pairs"] == 0:
            report.unusable.append(f"attribute {name!r} has no value with two usable training images")
        report.tasks.append(row)
    return report


def _verify_zappos(root: Path, key: str, level, cache_dir, progress_factory) -> VerifyReport:
    ds, report = _open(ZapposDataset, root, key, level)
    if ds is None:
        return report
    log = report.problems
    report.files = [FileCount("filenames.json", len(ds.filenames()) if (ds.folder / "filenames.json").is_file()
                              else None, EXPECTED_LINES["Zappos50k"]["filenames.json"])]
    for split in SPLIT_FILES:
        for c in CONDITIONS:
            path = ds.triplet_file(c, split)
            report.files.append(FileCount(str(path.relative_to(ds.folder)), _count(path), None))
    triplets = {s: ds.triplets(s) for s in SPLIT_FILES}
    if log.errors:
        kinds = ", ".join(f"{n} {k}" for k, n in log.counts("error").items())
        report.unusable.append(f"files have errors ({kinds})")
    bad = np.fromiter(_check(report, ds.image_paths(), cache_dir, progress_factory), dtype=np.int64)
    for split, t in triplets.items():
        ok = ~(np.isin(t.anchors, bad) | np.isin(t.far, bad) | np.isin(t.close, bad))
        report.skipped[f"triplets ({SPLIT_FILES[split]})"] = int((~ok).sum())
        triplets[split] = t.subset(ok)
    for a, name in enumerate(CONDITIONS):
        row = {"attribute": name}
        for split, t in triplets.items():
            row[f"triplets_{SPLIT_FILES[split]}"] = int((t.attributes == a).sum())
        for split in ("train", "test"):
            if row[f"triplets_{SPLIT_FILES[split]}"] == 0:
                report.unusable.append(f"condition {name!r} has no {SPLIT_FILES[split]} triplets with usable images")
        report.tasks.append(row)
    report.notes.append("evaluation is triplet accuracy (CSN protocol); MAP needs attribute values, which the "
                        "CSN files do not carry")
    return report


def _json_entries(path: Path) -> int | None:
    import json

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return len(data) if isinstance(data, list) else None


def _read_composed(key: str, folder: Path, split: str, log: ProblemLog):
    from cl_fir.data.composed import read_fashion200k, read_fashioniq, read_shoes

    reader = {"FashionIQ": read_fashioniq, "Shoes": read_shoes, "Fashion200k": read_fashion200k}[key]
    return reader(folder, split, problems=log)


def _verify_composed(root: Path, key: str, level, cache_dir, progress_factory) -> VerifyReport:
    folder_name, splits = COMPOSED[key]
    folder = root / folder_name
    report = VerifyReport(key, str(folder), level)
    log = report.problems
    if not folder.is_dir():
        report.unusable.append(f"{folder} is not a folder (expected the {key} layout, docs/datasets.md)")
        return report
    for name, expected in EXPECTED_LINES[key].items():
        if "*" in name:
            files = sorted(folder.glob(name.split(" ")[0]))
            lines = sum(_count(f) or 0 for f in files) if files else None
        elif name.endswith(".json"):
            lines = _json_entries(folder / name)
        else:
            lines = _count(folder / name)
        report.files.append(FileCount(name, lines, expected))
    data = {split: _read_composed(key, folder, split, log) for split in splits}
    if log.errors:
        kinds = ", ".join(f"{n} {k}" for k, n in log.counts("error").items())
        report.unusable.append(f"files have errors ({kinds})")
    keys = sorted({k for d in data.values() for k in d.image_path})
    paths = [data[splits[0]].image_path.get(k) or data[splits[1]].image_path[k] for k in keys]
    bad_idx = _check(report, paths, cache_dir, progress_factory)
    bad = {keys[i] for i in bad_idx}
    rows: dict[str, dict] = {}
    for split, d in data.items():
        usable = [q for q in d.queries if q.reference not in bad and q.targets and not set(q.targets) & bad]
        report.skipped[f"{split} queries"] = len(d.queries) - len(usable)
        for q in usable:
            row = rows.setdefault(q.category, {"attribute": q.category, **{f"queries_{s}": 0 for s in splits},
                                               "gallery": 0})
            row[f"queries_{split}"] += 1
        if split == splits[1]:
            for cat, gallery in d.galleries.items():
                for row in rows.values():
                    if cat in ("*", row["attribute"]):
                        row["gallery"] = len([k for k in gallery if k not in bad])
        for name, n in d.counts.items():
            if n:
                report.notes.append(f"{split}: {n} {name.replace('_', ' ')}")
    for row in rows.values():
        for split in splits:
            if row[f"queries_{split}"] == 0:
                report.unusable.append(f"category {row['attribute']!r} has no usable {split} queries")
    report.tasks = [rows[c] for c in sorted(rows)]
    if not rows:
        report.unusable.append("no usable queries")
    return report


def report_text(report: VerifyReport, max_listed: int = 10) -> str:
    """The human-readable report printed by ``cl-fir data verify``."""
    out = [f"{report.dataset}: {report.folder}"]
    out.append("files (non-empty lines, or JSON list entries, vs the published split):")
    for f in report.files:
        if f.lines is None:
            status = "MISSING"
        elif f.expected is None:
            status = "(no published count)"
        else:
            status = "ok" if f.lines == f.expected else f"DIFFERS from {f.expected:,}"
        out.append(f"  {f.name:<44} {'-' if f.lines is None else f'{f.lines:,}':>9}  {status}")
    for title, items in (("errors", report.problems.errors), ("warnings", report.problems.warnings)):
        if items:
            kinds = ", ".join(f"{n} {k}" for k, n in ProblemLog(problems=items).counts().items())
            out.append(f"{title}: {len(items)} ({kinds})")
            out += [f"  {p}" for p in items[:max_listed]]
            if len(items) > max_listed:
                out.append(f"  ... and {len(items) - max_listed} more")
    reasons = reason_counts(report.bad_images.values())
    out.append(f"images ({report.level}): {report.images_checked:,} checked, {len(report.bad_images):,} bad"
               + (f" ({', '.join(f'{n} {k}' for k, n in reasons.items())})" if reasons else ""))
    for path, reason in list(report.bad_images.items())[:max_listed]:
        out.append(f"  {path}: {reason}")
    if len(report.bad_images) > max_listed:
        out.append(f"  ... and {len(report.bad_images) - max_listed} more")
    out.append("a run would skip: " + (", ".join(f"{n:,} {k}" for k, n in report.skipped.items() if n) or "nothing"))
    if report.tasks:
        keys = [k for k in report.tasks[0] if k != "attribute"]
        out.append("per task (usable): " + ", ".join(keys))
        for row in report.tasks:
            out.append(f"  {row['attribute']:<22} " + " ".join(f"{row[k]:>7}" for k in keys))
    out += [f"note: {n}" for n in report.notes]
    mismatches = report.count_mismatches()
    if report.usable:
        verdict = "USABLE"
        if mismatches:
            verdict += (f" (but {len(mismatches)} file(s) differ from the published split: results are not "
                        f"comparable with published numbers)")
    else:
        verdict = "NOT USABLE: " + "; ".join(report.unusable[:5])
    out.append(verdict)
    return "\n".join(out)
