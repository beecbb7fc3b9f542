"""A fake far side's HTTP server: its Flask app on a real loopback port, in a daemon thread, with no access log."""
from __future__ import annotations

import threading
from typing import Any

from flask import Flask
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server


class QuietHandler(WSGIRequestHandler):
    """Keeps test output clean: each fake records its own requests for the tests to read."""

    def log_request(self, *_args: Any, **_kwargs: Any) -> None:
        pass


class LoopbackServer:
    """Serves ``app`` on ``127.0.0.1:<free port>`` until ``stop()``."""

    def __init__(self, app: Flask, name: str, handler: type[WSGIRequestHandler] = QuietHandler) -> None:
        self._server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True, request_handler=handler)
        self._server.daemon_threads = True  # a handler stuck in a scripted delay must not block stop()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.02},
                                        name=name, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return self._server.server_port

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
