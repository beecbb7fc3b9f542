"""Error pages and JSON errors that say what went wrong and what to do, never a traceback.

An htmx request gets no error page (htmx would not swap it, or would swap it into a card): a refused action keeps
the page as it is and raises a toast with the message; a poll for something that no longer exists stops polling.
"""
from __future__ import annotations

import json
import re
import logging
import sqlite3

from flask import Flask, current_app, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from sqlalchemy.exc import DatabaseError, SQLAlchemyError
from werkzeug.exceptions import HTTPException

from app.errors import NotFoundError, UserError
from app.extensions import db

log = logging.getLogger(__name__)
HTMX_STOP_POLLING = 286  # htmx's status code for "stop polling this element"


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def _is_htmx() -> bool:
    return bool(request.headers.get("HX-Request"))


def _toast(status: int, title: str, message: str):
    """Keep the page as it is and show the message in a toast (static/js/app.js)."""
    payload = {"maider:toast": {"level": "error", "title": title, "message": message}}
    return "", status, {"HX-Reswap": "none", "HX-Trigger": json.dumps(payload)}


def _render(status: int, title: str, message: str):
    if _wants_json():
        return jsonify({"error": message, "status": status}), status
    if _is_htmx():
        if request.method == "GET" and status == 404:
            return "", HTMX_STOP_POLLING, {"HX-Reswap": "none"}
        return _toast(200 if status < 500 else status, title, message)
    # a page is not a terminal: drop the CLI's "(see 'maider list')" hints
    message = re.sub(r" \(see 'maider [^']*'\)", "", message)
    return render_template("errors/error.html", status=status, title=title, message=message), status


def init_app(app: Flask) -> None:
    """Register handlers for HTTP errors, CSRF failures, user errors and unexpected exceptions."""

    @app.errorhandler(CSRFError)
    def _csrf(error: CSRFError):
        return _render(400, "Request refused",
                       f"{error.description} Reload the page and try again.")

    @app.errorhandler(NotFoundError)
    def _not_found(error: NotFoundError):
        return _render(404, "Not found", str(error))

    @app.errorhandler(UserError)
    def _user_error(error: UserError):
        return _render(400, "That did not work", str(error))

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException):
        return _render(error.code or 500, error.name, error.description or error.name)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception):
        try:
            db.session.rollback()
        except SQLAlchemyError:
            log.warning("rollback after an error failed too", exc_info=True)
        log.exception("unhandled error on %s %s", request.method, request.path)
        if isinstance(error, (DatabaseError, sqlite3.DatabaseError)):
            return _render(500, "Database error", _database_error_message())
        return _render(500, "Something went wrong",
                       "maider hit an unexpected error; the details are in the server log.")


def _database_error_message() -> str:
    """Say what is known after a database error, and no more: the VMs are at the provider, the truth about them may
    not be in the database, and maider's background work reads the same database."""
    database = current_app.config.get("SQLALCHEMY_DATABASE_URI", "").removeprefix("sqlite:///")
    return (f"maider could not read or write its database ({database}); the details are in the server log. "
            "What maider shows about sessions and VMs may be out of date, and its background checks (health, "
            "watchdog, budget) may be failing as well. VMs keep running and billing at the provider until they are "
            "destroyed: check the provider's console. Restart maider: at start it checks the database and, if it "
            "is damaged, says so and keeps a copy.")


def render_error(status: int, title: str, message: str):
    """The error answer this request expects: JSON for the API, a toast for htmx, else an error page."""
    return _render(status, title, message)
