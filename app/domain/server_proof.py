"""How the CLI tells the maider server that wrote server.json from anything else answering at its address.

server.json outlives a killed server; another local user may then listen on its port. Before sending its bearer token,
the CLI sends a fresh random nonce to the unauthenticated health route, and only the real server, which holds the same
token, can answer with ``HMAC-SHA256(token, nonce)``. The token itself never crosses the wire for this.
"""
from __future__ import annotations

import hashlib
import hmac
import re
import secrets

NONCE_RE = re.compile(r"[A-Za-z0-9_-]{16,128}")  # token_urlsafe output; bounded so the route does no real work


def new_nonce() -> str:
    return secrets.token_urlsafe(32)


def is_valid_nonce(nonce: str) -> bool:
    return NONCE_RE.fullmatch(nonce) is not None


def server_proof(api_token: str, nonce: str) -> str:
    """The server's answer to ``nonce``: hex HMAC-SHA256 keyed by the API token."""
    return hmac.new(api_token.encode(), nonce.encode(), hashlib.sha256).hexdigest()


def proof_matches(api_token: str, nonce: str, answer: object) -> bool:
    """Constant-time check of a server's answer (anything not a string is wrong)."""
    if not isinstance(answer, str):
        return False
    return hmac.compare_digest(server_proof(api_token, nonce).encode(), answer.encode())
