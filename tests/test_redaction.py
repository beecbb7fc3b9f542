"""Secrets revealed by maider are masked in every log line, even when a library echoes them."""
from __future__ import annotations

import logging

from app.config import load_settings
from app.redaction import MASK, RedactingFilter


def test_a_revealed_token_is_masked_in_log_records(tmp_path, caplog):
    (tmp_path / ".env.secrets").write_text("LINODE_TOKEN=planted-token-4711\n")
    token = load_settings(tmp_path, environ={}).linode_token.reveal()
    caplog.handler.addFilter(RedactingFilter())
    logger = logging.getLogger("some.library")
    logger.warning("GET https://api.example/v4?token=%s failed", token)
    try:
        raise RuntimeError(f"bad auth header Bearer {token}")
    except RuntimeError:
        logger.exception("request failed")
    assert "planted-token-4711" not in caplog.text
    assert f"token={MASK}" in caplog.text and f"Bearer {MASK}" in caplog.text
