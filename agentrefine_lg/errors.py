"""Errors that reach a user: each names the file, record and field at fault. The CLI prints them
without a traceback and exits 2."""

from __future__ import annotations


class AgentRefineError(Exception):
    """A problem with the user's input or setup, explained in the message."""


class InputError(AgentRefineError, ValueError):
    """Bad input data: ``where`` names the file and record (``path:line``), ``field`` the key."""

    def __init__(self, message: str, *, where: str | None = None, field: str | None = None):
        self.where, self.field, self.detail = where, field, message
        parts = [p for p in (where, f"field '{field}'" if field else None) if p]
        super().__init__(f"{': '.join(parts)}: {message}" if parts else message)
