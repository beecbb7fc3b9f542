"""A placeholder for Open WebUI on the simulated VM: enough for the panel's link and iframe to show something real."""
from __future__ import annotations

from collections.abc import Callable, Iterable

from app.simulator.fake_vllm import LoopbackHttpServer

PAGE = (b"<!doctype html><html><head><meta charset=\"utf-8\"><title>Open WebUI (maider demo)</title></head>"
        b"<body><h1>Open WebUI</h1><p>This is maider's demo VM: a real VM runs Open WebUI here, "
        b"connected to vLLM.</p></body></html>")


def webui_app(environ: dict, start_response: Callable) -> Iterable[bytes]:
    """Answer /health with JSON and every other path with the placeholder page."""
    if environ.get("PATH_INFO") == "/health":
        start_response("200 OK", [("Content-Type", "application/json")])
        return [b'{"status":true}']
    start_response("200 OK", [("Content-Type", "text/html; charset=utf-8"), ("Content-Length", str(len(PAGE)))])
    return [PAGE]


class FakeWebUiServer:
    """The placeholder WebUI on a free loopback port."""

    def __init__(self, port: int = 0) -> None:
        self._http = LoopbackHttpServer(webui_app, port=port, threads=2)
        self.port = self._http.port

    def stop(self) -> None:
        self._http.stop()
