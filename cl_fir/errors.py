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
