"""Errors that reach the user as one clear line: what went wrong, with which file, and what to do."""

from __future__ import annotations

from pathlib import Path


def printable(text: str) -> str:
    """``text`` safe to print: the bytes of a non-UTF-8 file name (surrogate escapes) shown as backslash escapes."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


class MedanomalyError(Exception):
    """Base class of every error medanomaly raises on purpose."""


class InputError(MedanomalyError):
    """A file or folder cannot be used as input.

    Args:
        path: The offending file or folder.
        problem: What is wrong with it.
        hint: What the user can do about it.
    """

    def __init__(self, path: str | Path, problem: str, hint: str = "") -> None:
        self.path = str(path)
        self.problem = problem
        self.hint = hint
        message = f"{printable(self.path)}: {problem}"
        if hint:
            message += f" ({hint})"
        super().__init__(message)


class ModelError(MedanomalyError):
    """A model directory is missing, incomplete or of an unknown method."""


class NotFittedError(MedanomalyError, RuntimeError):
    """A detector was asked to score before it was fitted."""
