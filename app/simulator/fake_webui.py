"""A placeholder for Open WebUI on the simulated VM: enough for the panel's link and iframe to show something real."""
from __future__ import annotations

from collections.abc import Callable, Iterable

from app.simulator.fake_vllm import LoopbackHttpServer

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Open WebUI (maider demo)</title>
<style>
  body { margin: 0; font: 15px/1.5 system-ui, sans-serif; background: #171717; color: #ececec; display: flex;
         min-height: 100vh; }
  nav { width: 210px; background: #0d0d0d; padding: 16px; box-sizing: border-box; }
  nav h1 { font-size: 16px; margin: 0 0 16px; } nav div { color: #9b9b9b; font-size: 13px; padding: 6px 0; }
  main { flex: 1; display: flex; flex-direction: column; padding: 20px; box-sizing: border-box; }
  .model { font-weight: 600; margin-bottom: 20px; } .model span { color: #9b9b9b; font-weight: 400; }
  .msg { max-width: 640px; padding: 10px 14px; border-radius: 14px; margin: 6px 0; }
  .you { align-self: flex-end; background: #2f2f2f; } .bot { background: transparent; }
  .box { margin-top: auto; border: 1px solid #3a3a3a; border-radius: 18px; padding: 12px 16px; color: #8e8e8e; }
  @media (max-width: 520px) { nav { display: none; } }
</style></head>
<body><nav><h1>Open WebUI</h1><div>New chat</div><div>Today</div><div>Refactor the parser</div></nav>
<main><div class="model">coder <span>· served by vLLM through maider's tunnel</span></div>
<div class="msg you">Is this a real Open WebUI?</div>
<div class="msg bot">This is maider's demo VM, simulated on your laptop. On a real GPU VM, Open WebUI runs here,
bound to the VM's localhost and connected to vLLM, and this frame shows it through the same SSH tunnel.</div>
<div class="box">Send a message</div></main></body></html>
""".encode()


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
