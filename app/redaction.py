"""Keep secrets out of logs: every secret maider reveals is registered here and masked in every log record.

Code never logs a secret on purpose; this filter is the second line of defence for the text a library puts into an
exception or a debug line (a URL with a token, a request body echoed in an error).
"""
from __future__ import annotations

import logging
import re
import threading

MASK = "[redacted]"
# Shapes of secrets maider may not have registered (a token echoed by a library before maider read it).
KEY_PATTERNS = (
    re.compile(r"sk-maider-[A-Za-z0-9_-]{8,}"),  # maider's vLLM API keys (app.engine.identity)
    re.compile(r"(?<=['\"]api_key['\"]: ['\"])[^'\"]{6,}(?=['\"])"),  # vLLM's "non-default args" line
    re.compile(r"(?<=--api-key[ =])\S{6,}"),
    re.compile(r"\bhf_[A-Za-z0-9]{20,}"),  # Hugging Face tokens
)
MIN_SECRET_LENGTH = 6  # shorter strings would mask ordinary words

_lock = threading.Lock()
_secrets: set[str] = set()


def register_secret(value: str) -> None:
    """Remember a secret so it is masked wherever it would be logged."""
    if value and len(value) >= MIN_SECRET_LENGTH:
        with _lock:
            _secrets.add(value)


def redact(text: str) -> str:
    """``text`` with every registered secret, and anything shaped like a known kind of key, masked."""
    with _lock:
        secrets = sorted(_secrets, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern in KEY_PATTERNS:
        text = pattern.sub(MASK, text)
    return text


class RedactingFilter(logging.Filter):
    """Formats the record's message once, masks secrets in it (and in its traceback text), and keeps the record."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = redact(message)
        if masked != message:
            record.msg, record.args = masked, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        return True


def install(logger: logging.Logger | None = None) -> None:
    """Attach the filter to every handler of ``logger`` (the root logger by default)."""
    target = logger or logging.getLogger()
    for handler in target.handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())
