"""Single-use sign-in links for the laptop's owner, valid only while this server process runs.

``maider serve`` prints one at start (Jupyter's habit) and ``maider open`` asks the running server for another. Only
SHA-256 digests are kept, in memory: a restart voids every unused link, and nothing on disk can be replayed.
"""
from __future__ import annotations

import hashlib
import secrets
import threading
import time

LINK_LIFETIME_S = 24 * 3600.0


class LoginLinks:
    """Mint and redeem owner sign-in tokens; each redeems once."""

    def __init__(self, lifetime_s: float = LINK_LIFETIME_S, clock=time.monotonic) -> None:
        self._lifetime = lifetime_s
        self._clock = clock
        self._lock = threading.Lock()
        self._expiry_by_digest: dict[str, float] = {}

    def mint(self) -> str:
        token = secrets.token_urlsafe(32)
        with self._lock:
            now = self._clock()
            self._expiry_by_digest = {d: t for d, t in self._expiry_by_digest.items() if t > now}
            self._expiry_by_digest[_digest(token)] = now + self._lifetime
        return token

    def redeem(self, token: str) -> bool:
        """True exactly once for a minted, unexpired token."""
        if not token or len(token) > 128:
            return False
        with self._lock:
            expiry = self._expiry_by_digest.pop(_digest(token), None)
        return expiry is not None and expiry > self._clock()


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
