"""One exception type for every user-facing problem, so the CLI can print one line and exit."""

from __future__ import annotations

from pathlib import Path


class CryopickError(Exception):
    """A problem with the user's input or configuration, worded for the user.

    The message always names the file or setting at fault, so the CLI prints it as is.
    """

    def __init__(self, message: str, path: str | Path | None = None) -> None:
        self.path = None if path is None else Path(path)
        super().__init__(f"{path}: {message}" if path is not None else message)
