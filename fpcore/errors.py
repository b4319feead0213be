"""One exception hierarchy for everything fpcore raises on purpose.

Every error names the file it is about and says what is wrong in one line, so a
host can show ``str(err)`` as is.
"""
from __future__ import annotations

import os


class FpError(Exception):
    """Base class of all fpcore errors."""

    #: CLI exit code for this kind of error (see docs/json-format.md)
    exit_code = 3

    def __init__(self, message: str, path: str | os.PathLike | None = None, fix: str | None = None):
        self.path = os.fspath(path) if path is not None else None
        self.message = message
        self.fix = fix
        super().__init__(self.__str__())

    def __str__(self) -> str:  # one line: "<path>: <message> (fix: ...)"
        text = f"{self.path}: {self.message}" if self.path else self.message
        if self.fix:
            text += f" Fix: {self.fix}"
        return text.replace("\n", " ")


class UsageError(FpError):
    """The caller asked for something impossible (bad arguments, unknown name)."""

    exit_code = 2


class BadFileError(FpError):
    """The file cannot be read as a model: missing, unreadable, truncated, malformed."""


class HeaderError(BadFileError):
    """A safetensors header is malformed or lies about the data."""


class UnsupportedError(BadFileError):
    """The file is well-formed but of a kind or dtype fpcore does not handle."""


class UnsafePickleError(BadFileError):
    """A pickle tried to do more than rebuild tensors."""


class RefError(FpError):
    """Reference database problem (unknown name, duplicate name, bad parent)."""

    exit_code = 2


class StoreError(FpError):
    """The fingerprint store could not be used."""


class ExposureError(FpError):
    """Refused because the UI is reachable by others (a path outside the model folders, a write
    without opt-in) or a URL points inside the server's network; names the setting that allows it."""

    exit_code = 2
