"""maider's exception hierarchy.

Errors carry their facts as attributes so callers decide by type and attribute, never by searching message text.
A ``UserError`` message is written for the person at the keyboard: it says what went wrong and what to do, and it
is safe to show in the panel and the CLI.
"""
from __future__ import annotations


class MaiderError(Exception):
    """Base of every error maider raises on purpose."""


class UserError(MaiderError):
    """Bad input or a request that is not allowed now; the message is shown to the user as is."""


class ConfigError(UserError):
    """A configuration value is missing or invalid; ``variable`` names it."""

    def __init__(self, message: str, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


class SecretResolutionError(ConfigError):
    """An ``op://`` reference (or another secret source) could not be resolved.

    The literal reference is never used as a secret: callers must stop, not fall back.
    """


class NotFoundError(UserError):
    """A maider object (session, benchmark) does not exist."""


class InvalidTransition(UserError):
    """A session cannot move from its current state to the requested one."""

    def __init__(self, current: str, target: str) -> None:
        super().__init__(f"a session in state '{current}' cannot move to '{target}'")
        self.current = current
        self.target = target


class FieldError(UserError):
    """Request fields break maider's rules (a folder that does not exist); ``fields`` maps each to its problem."""

    def __init__(self, fields: dict[str, str], message: str | None = None) -> None:
        super().__init__(message or "; ".join(f"{name}: {problem}" for name, problem in fields.items()))
        self.fields = dict(fields)


class MalformedRequest(FieldError):
    """The request's shape is wrong: not JSON, not an object, or a field of the wrong type, pattern or range."""

    def __init__(self, fields: dict[str, str] | None = None, message: str | None = None) -> None:
        super().__init__(fields or {}, message)


class ConflictError(UserError):
    """The request clashes with what exists now (a live session already holds the name)."""
