"""Error pages and JSON errors that say what went wrong and what to do, never a traceback."""
from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from app.errors import NotFoundError, UserError
from app.extensions import db

log = logging.getLogger(__name__)


def _wants_json() -> bool:
    return request.path.startswith("/api/")


def _render(status: int, title: str, message: str):
    if _wants_json():
        return jsonify({"error": message, "status": status}), status
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
        db.session.rollback()
        log.exception("unhandled error on %s %s", request.method, request.path)
        return _render(500, "Something went wrong",
                       "maider hit an unexpected error; the details are in the server log. "
                       "Your sessions and VMs are unaffected.")
