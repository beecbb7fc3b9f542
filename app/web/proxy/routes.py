"""Proxy routes: authenticate the user's key, forward to the session's tunnel with the VM's key, stream back.

Streams pass through event by event as vLLM writes them (waitress sends each yielded chunk at once), and the
upstream connection is kept alive between requests, so the proxy adds about a millisecond per request and nothing
per token (``bench/proxy.py`` measures both).
"""
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
from flask import Response, current_app, jsonify, request, stream_with_context

from app.domain.openai_stream import SseUsageReader, usage_from
from app.extensions import db
from app.services import model_proxy
from app.services.model_proxy import ProxyRefused
from app.web.proxy import bp

UPSTREAM_TIMEOUT = httpx.Timeout(connect=5.0, read=600.0, write=30.0, pool=10.0)
PASSED_HEADERS = ("content-type", "cache-control")


def _upstream() -> httpx.Client:
    """One pooled client per app: keep-alive connections to every session's tunnel."""
    client = current_app.extensions.get("maider_proxy_client")
    if client is None:
        client = current_app.extensions["maider_proxy_client"] = httpx.Client(
            timeout=UPSTREAM_TIMEOUT, limits=httpx.Limits(max_connections=64, max_keepalive_connections=16))
    return client


def close_upstream(app) -> None:
    """Server shutdown: write the last usage counts and close the pooled upstream connections."""
    with app.app_context():
        model_proxy.flush_usage()
    client = app.extensions.pop("maider_proxy_client", None)
    if client is not None:
        client.close()


def _error(status: int, code: str, message: str):
    kind = "invalid_request_error" if status < 500 else "server_error"
    return jsonify({"error": {"message": message, "type": kind, "code": code}}), status


@bp.errorhandler(ProxyRefused)
def _refused(error: ProxyRefused):
    return _error(error.status, error.code, str(error))


@bp.get("/models")
def models(name: str):
    """The session's served model, as the OpenAI client lists it."""
    return _forward(name, "models", None)


@bp.post("/chat/completions")
def chat_completions(name: str):
    """A chat completion, streamed or not."""
    return _forward(name, "chat/completions", _json_body())


@bp.post("/completions")
def completions(name: str):
    """A plain completion, streamed or not."""
    return _forward(name, "completions", _json_body())


def _json_body() -> dict:
    body = request.get_json(silent=True)
    if not request.is_json or not isinstance(body, dict):
        raise ProxyRefused(400, "invalid_body", "The request body must be a JSON object (Content-Type: "
                                                "application/json).")
    return body


def _forward(name: str, path: str, body: dict | None):
    user = model_proxy.authenticate(request.headers.get("Authorization", ""))
    target = model_proxy.target(name, Path(current_app.config["MAIDER_HOME"]))
    if body is not None and "stream" in body and not isinstance(body["stream"], bool):
        raise ProxyRefused(400, "invalid_body", "'stream' must be true or false.")
    stream = bool(body and body.get("stream"))
    drop_usage_chunk = False
    if stream:
        options = body.get("stream_options") if isinstance(body.get("stream_options"), dict) else {}
        if not options.get("include_usage"):
            drop_usage_chunk = True
            body = {**body, "stream_options": {**options, "include_usage": True}}
    slot = model_proxy.take_slot()  # ProxyRefused(429) when teammates already hold every proxy slot
    if body is not None:
        model_proxy.mark_activity(target.session_id)  # a completion is use; listing models is not
    db.session.commit()  # end the read transaction: a stream may last minutes
    relay = _Relay(target.session_id, user.name, slot)
    try:
        upstream = _upstream().send(_upstream().build_request(
            "POST" if body is not None else "GET", f"{target.base_url}/{path}",
            headers={"Authorization": f"Bearer {target.api_key}", "Accept": request.headers.get("Accept", "*/*"),
                     **({"Content-Type": "application/json"} if body is not None else {})},
            content=json.dumps(body).encode() if body is not None else None,
            params=request.args if body is None else None), stream=True)
    except httpx.HTTPError:
        relay.finish(None, failed=True)
        raise ProxyRefused(502, "upstream_unreachable", f"Session '{name}' did not answer through its tunnel; maider "
                                                        "is checking it: try again in a few seconds.") from None
    relay.upstream = upstream
    headers = {k: v for k, v in upstream.headers.items() if k.lower() in PASSED_HEADERS}
    if upstream.status_code == 200 and upstream.headers.get("content-type", "").startswith("text/event-stream"):
        response = Response(stream_with_context(relay.events(SseUsageReader(drop_usage_chunk))),
                            status=200, headers={**headers, "X-Accel-Buffering": "no"})
        app = current_app._get_current_object()
        response.call_on_close(lambda: _in_app(app, relay.finish, None, True))  # no-op once the stream ended
        return response
    try:
        content = upstream.read()
    except httpx.HTTPError:
        relay.finish(None, failed=True)
        raise ProxyRefused(502, "upstream_broke_off", f"Session '{name}' stopped answering mid-reply; try again.") \
            from None
    usage = None
    if upstream.status_code == 200 and path != "models":
        try:
            usage = usage_from(json.loads(content))
        except ValueError:
            usage = None
    relay.finish(usage, failed=upstream.status_code >= 400)
    return Response(content, status=upstream.status_code, headers=headers)


def _in_app(app, function, *args) -> None:
    with app.app_context():
        function(*args)


class _Relay:
    """One proxied request's end: close upstream, give back the slot, count it -- exactly once, however it ends
    (finished, client gone, generator never started)."""

    def __init__(self, session_id: int, user_name: str, slot) -> None:
        self.session_id = session_id
        self.user_name = user_name
        self.slot = slot
        self.upstream: httpx.Response | None = None
        self._done = False

    def events(self, reader: SseUsageReader) -> Iterator[bytes]:
        """Send each upstream event on as soon as it is whole; count the request and its tokens at the end."""
        failed = True
        try:
            for data in self.upstream.iter_raw():
                out = reader.feed(data)
                if out:
                    yield out
            rest = reader.flush()
            if rest:
                yield rest
            failed = False
        except httpx.HTTPError:
            pass  # the VM or the tunnel broke off: the client sees the stream end
        finally:
            self.finish(reader.usage, failed=failed)

    def finish(self, usage, failed: bool) -> None:
        if self._done:
            return
        self._done = True
        if self.upstream is not None:
            self.upstream.close()
        self.slot.release()
        model_proxy.record_usage(self.session_id, self.user_name, usage, failed=failed)
