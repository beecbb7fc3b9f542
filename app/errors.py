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
