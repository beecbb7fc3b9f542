"""Flask-Limiter, for the sign-in forms: a kept library counts failures per address in fixed windows, so
password guessing from one address stops after a few tries a minute (per-account lock-outs live in the users
service). Nothing else is limited: the panel's own polling must never be refused."""
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

limiter = Limiter(key_func=get_remote_address, default_limits=[], storage_uri="memory://",
                  headers_enabled=False, strategy="fixed-window")
