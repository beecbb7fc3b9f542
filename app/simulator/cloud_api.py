"""The demo cloud's own small HTTP API: just what a VM's failsafe needs to delete its own instance.

Linode-shaped (``DELETE /v4/linode/instances/{id}`` with ``Authorization: Bearer <token>``), so the failsafe script a
real VM runs works unchanged against a simulated VM's cloud. Listens on 127.0.0.1 only.
"""
from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)

_INSTANCE_PATH = re.compile(r"^/v4/linode/instances/(\d+)$")


class CloudApi:
    """``authorize(token)`` says whether a bearer token may delete; ``delete(id)`` is False when there is no such VM."""

    def __init__(self, authorize: Callable[[str], bool], delete: Callable[[str], bool]) -> None:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_DELETE(self) -> None:  # noqa: N802 - the http.server naming
                match = _INSTANCE_PATH.match(self.path)
                header = self.headers.get("Authorization") or ""
                token = header[len("Bearer "):] if header.startswith("Bearer ") else ""
                if not token or not api.authorize(token):
                    self._answer(401, {"errors": [{"reason": "Invalid Token"}]})
                elif match is None:
                    self._answer(404, {"errors": [{"reason": "Not found"}]})
                elif not api.delete(match.group(1)):
                    self._answer(404, {"errors": [{"reason": "Not found"}]})
                else:
                    self._answer(200, {})

            def _answer(self, status: int, body: dict) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the http.server signature
                log.debug("simulated cloud API: " + format, *args)

        self.authorize = authorize
        self.delete = delete
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="simulated-cloud-api", daemon=True)
        self._thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v4"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
