"""User-facing errors.

Anything a user can cause (a bad option, a malformed file, a missing dataset) raises a
subclass of :class:`CLFirError` with a message that names the place and what was
expected. The CLI prints the message without a traceback (unless ``--debug``).
"""


class CLFirError(Exception):
    """Base class of every error the CLI reports as a one-line message."""


class ConfigError(CLFirError):
    """An option, scenario file or run configuration is invalid."""


class DataFormatError(CLFirError):
    """A dataset file is missing or malformed; the message names the file and line."""


class TrainingError(CLFirError):
    """Training cannot continue (for example, the loss became non-finite)."""


class DamagedFileError(ConfigError):
    """A file cl-fir reads back (a checkpoint, run.json, a result CSV, a TOML file, ...) is
    empty, truncated, not UTF-8 or not in the expected format."""

    def __init__(self, path, problem: str):
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class OutputError(CLFirError, OSError):
    """A result, checkpoint or lock file could not be written (full disk, read-only folder,
    ...). Also an :class:`OSError`, so code that treats a failed write as harmless (a cache)
    still can."""
