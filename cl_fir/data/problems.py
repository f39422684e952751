"""Problems found while reading a dataset: fatal ones stop a run, the rest are counted.

Readers report every problem through a :class:`ProblemLog`. A run uses a log with
``collect=False``: the first *error* (a malformed line, an out-of-range label) raises a
:class:`~cl_fir.errors.DataFormatError` naming the file and line at once, while
*warnings* (duplicate lines, 1-based type codes that were normalised, a different image
extension on disk) are collected and reported in the results. ``cl-fir data verify``
uses ``collect=True`` to list every problem of a dataset in one pass.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from cl_fir.errors import DataFormatError

ERROR = "error"
WARNING = "warning"


@dataclass(frozen=True)
class DataProblem:
    severity: str          # "error" or "warning"
    kind: str              # short machine-readable category, e.g. "out-of-range", "duplicate"
    path: str
    line: int | None       # 1-based line number, None for whole-file problems
    message: str

    def where(self) -> str:
        return f"{self.path}:{self.line}" if self.line is not None else self.path

    def __str__(self) -> str:
        return f"{self.where()}: {self.message}"


@dataclass
class ProblemLog:
    collect: bool = False
    problems: list[DataProblem] = field(default_factory=list)

    def error(self, kind: str, path: Path | str, line: int | None, message: str) -> None:
        problem = DataProblem(ERROR, kind, str(path), line, message)
        if not self.collect:
            raise DataFormatError(str(problem))
        self.problems.append(problem)

    def warning(self, kind: str, path: Path | str, line: int | None, message: str) -> None:
        self.problems.append(DataProblem(WARNING, kind, str(path), line, message))

    @property
    def errors(self) -> list[DataProblem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[DataProblem]:
        return [p for p in self.problems if p.severity == WARNING]

    def counts(self, severity: str | None = None) -> dict[str, int]:
        """Number of problems per kind (optionally of one severity)."""
        return dict(Counter(p.kind for p in self.problems if severity in (None, p.severity)))
