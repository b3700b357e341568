"""The project's error type: a message plus where it came from (file, line, layer)."""

from __future__ import annotations

import re

# C0 and C1 controls, DEL and the Unicode line/paragraph separators: terminal escapes, bells,
# carriage returns and line breaks that a file or class name could smuggle into a printed line.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def printable(text) -> str:
    """``text`` with each control character written as its Python escape (``\\x1b``,
    ``\\n``, ``\\t``), so a name prints as one harmless piece of one line."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], str(text))


class CnncliError(Exception):
    """A user-facing error. The CLI prints ``str(err)`` as one line and exits with ``exit_code``.

    ``key`` names the offending hyperparameter or config key so the config loader can
    point at its line; ``layer`` is a short description such as ``layer 3 'conv2' (conv2d)``.
    """

    exit_code = 1

    def __init__(self, message: str, *, file=None, line=None, column=None, layer=None,
                 key=None, hint=None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.column = column
        self.layer = layer
        self.key = key
        self.hint = hint

    def located(self, *, file=None, line=None, column=None, layer=None) -> CnncliError:
        """Fill in location fields that are still unknown; returns self for chaining."""
        self.file = self.file if self.file is not None else file
        self.line = self.line if self.line is not None else line
        self.column = self.column if self.column is not None else column
        self.layer = self.layer if self.layer is not None else layer
        return self

    def __str__(self) -> str:
        where = ""
        if self.file is not None:
            where = str(self.file)
            if self.line is not None:
                where += f":{self.line}"
                if self.column is not None:
                    where += f":{self.column}"
            where += ": "
        layer = f"{self.layer}: " if self.layer else ""
        hint = f" ({self.hint})" if self.hint else ""
        return f"{where}{layer}{self.message}{hint}"


class ConfigError(CnncliError):
    """A config or hyperparameter is wrong: the user must edit their file."""

    exit_code = 2


class ShapeError(ConfigError):
    """A layer cannot accept the shape it is given."""


class DataError(CnncliError):
    """A dataset is missing, malformed, or does not fit the model."""

    exit_code = 2


class CheckpointError(CnncliError):
    """A checkpoint cannot be read or does not match."""

    exit_code = 2


class MissingExtraError(CnncliError):
    """A command needs an optional extra that is not installed (``pip install 'cnncli[...]'``)."""

    exit_code = 2


class MemoryLimitError(CnncliError):
    """A run needs more memory than this machine has (see docs/train.md, "Memory"). Exit 1,
    not 2: the config is valid and runs where there is more memory."""

    exit_code = 1
