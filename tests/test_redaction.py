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


def test_state_messages_and_events_are_masked_too(app):
    from app.engine.state import record_event, transition
    from app.extensions import db
    from app.models import Reason, Session, SessionState
    from app.redaction import register_secret

    register_secret("sk-maider-planted-key")
    with app.app_context():
        session = Session(uid="u" * 32, name="x", provider="simulated", label="maider-x", region="r", plan="p",
                          model_id="m", served_name="coder", status=SessionState.REQUESTED.value)
        db.session.add(session)
        transition(session, SessionState.FAILED, reason=Reason.INTERNAL_ERROR,
                   message="boom: Authorization: Bearer sk-maider-planted-key")
        record_event(session, "error", "echo sk-maider-planted-key")
        db.session.commit()
        assert "planted" not in session.status_message
        assert all("planted" not in e.message for e in session.events)


def test_key_shaped_text_is_masked_even_when_never_registered():
    from app.redaction import redact

    line = "non-default args: {'model': 'm', 'api_key': 'sk-maider-unregistered123', 'x': 1} hf_abcdefghijklmnopqrstuv"
    masked = redact(line)
    assert "unregistered123" not in masked and "hf_abcdefghijklmnopqrstuv" not in masked and "'model': 'm'" in masked
