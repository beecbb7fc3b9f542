"""The door of each HTTP tunnel: what the local port checks before a connection is forwarded to the VM.

Loopback ports are reachable by every local user and, through DNS rebinding, by any web page (``evil.example``
resolved to 127.0.0.1 sends ``Host: evil.example``). So before a connection reaches the VM:

- every HTTP forward refuses a ``Host`` other than ``127.0.0.1``/``localhost`` (optionally with the tunnel's port);
- the Open WebUI forward also requires maider's access cookie (``maider_webui_<port>``, HttpOnly, SameSite=Strict),
  which only the panel hands out: its logged-in user gets a one-time, short-lived link to ``/__maider/enter?t=...``
  on the WebUI port, which sets the cookie and redirects to Open WebUI;
- maider's own cookies (``maider_*``: the panel's session, the access cookie) are stripped from what reaches the VM.

Only the first request head of a connection is read. That is enough for ``Host``: browsers key connections by host,
so a page on ``evil.example`` never rides a connection opened for ``127.0.0.1``. For the WebUI the head is rewritten
to ``Connection: close``, so each connection carries exactly one request and every request is checked; a WebSocket
upgrade keeps its connection (after it, the stream is the upgraded socket of an admitted client). The vLLM API keeps
its kept-alive connections (aider's requests): the check costs one parse of one head per connection.
"""
from __future__ import annotations

import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import parse_qs, urlsplit

Front = Literal["raw", "http", "webui"]  # raw: no checks (tests' echo servers); http: Host only; webui: + cookie

HEAD_LIMIT = 64 * 1024  # a request head larger than this is refused (431)
HEAD_TIMEOUT_S = 30.0  # a connection that sends no complete head in this long is closed (browsers pre-connect)
ENTER_PATH = "/__maider/enter"
LINK_TTL_S = 60.0  # a panel link must be followed within this long, once
COOKIE_TTL_S = 12 * 3600.0  # the access cookie's life (and maider's memory of it; a restart forgets it)
COOKIE_PREFIX = "maider_"
LOCAL_HOSTS = ("127.0.0.1", "localhost")


def cookie_name(port: int) -> str:
    """Cookies are not kept apart by port, so each WebUI port's cookie carries the port in its name."""
    return f"{COOKIE_PREFIX}webui_{port}"


@dataclass
class WebUiAccess:
    """One tunnel's entry links (one-time) and the cookie values they bought, in this process's memory only."""

    links: dict[str, float] = field(default_factory=dict)  # token -> expiry (time.monotonic)
    cookies: dict[str, float] = field(default_factory=dict)  # cookie value -> expiry
    lock: threading.Lock = field(default_factory=threading.Lock)

    def mint_link(self) -> str:
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self.lock:
            self.links = {t: exp for t, exp in self.links.items() if exp > now}
            self.links[token] = now + LINK_TTL_S
        return token

    def redeem(self, token: str) -> str | None:
        """The link's token, once and in time, buys a cookie value; anything else buys nothing."""
        now = time.monotonic()
        with self.lock:
            expiry = self.links.pop(token, None)
            if expiry is None or expiry <= now:
                return None
            self.cookies = {c: exp for c, exp in self.cookies.items() if exp > now}
            value = secrets.token_urlsafe(32)
            self.cookies[value] = now + COOKIE_TTL_S
            return value

    def admits(self, value: str | None) -> bool:
        if not value:
            return False
        with self.lock:
            expiry = self.cookies.get(value)
        return expiry is not None and expiry > time.monotonic()


@dataclass(frozen=True)
class Head:
    """A parsed request head (only what the checks need)."""

    method: str
    target: str
    version: str
    headers: list[tuple[str, str]]  # in order, names as sent

    def values(self, name: str) -> list[str]:
        return [v for n, v in self.headers if n.lower() == name]

    def encode(self) -> bytes:
        lines = [f"{self.method} {self.target} {self.version}"] + [f"{n}: {v}" for n, v in self.headers]
        return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


@dataclass(frozen=True)
class Decision:
    """Either bytes to forward to the VM (the head, maybe rewritten, and what followed it) or a reply to the client."""

    forward: bytes | None = None
    reply: bytes | None = None


def read_head(client: socket.socket) -> tuple[bytes, bytes] | None:
    """(head without the blank line, bytes after it) once a full head arrived; None when the client went away,
    stalled, or sent more than HEAD_LIMIT without one (the caller answers 431 if anything came)."""
    client.settimeout(HEAD_TIMEOUT_S)
    data = b""
    try:
        while b"\r\n\r\n" not in data:
            if len(data) > HEAD_LIMIT:
                return b"", data
            chunk = client.recv(65536)
            if not chunk:
                return None
            data += chunk
    except OSError:  # timeout or reset
        return None
    finally:
        client.settimeout(None)
    head, _, rest = data.partition(b"\r\n\r\n")
    return head, rest


def parse_head(raw: bytes) -> Head | None:
    try:
        text = raw.decode("latin-1")
    except UnicodeDecodeError:  # pragma: no cover -- latin-1 decodes any byte
        return None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        return None
    headers = []
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or " " in name:
            return None  # obsolete line folding or a malformed field: not worth guessing
        headers.append((name, value.strip()))
    return Head(parts[0], parts[1], parts[2], headers)


def host_is_local(host: str, port: int) -> bool:
    """``127.0.0.1``, ``localhost``, or either with this tunnel's port."""
    name, sep, given_port = host.strip().lower().rpartition(":")
    if not sep:
        name, given_port = given_port, ""
    return name in LOCAL_HOSTS and given_port in ("", str(port))


def _cookies(head: Head) -> list[tuple[str, str]]:
    pairs = []
    for header in head.values("cookie"):
        for item in header.split(";"):
            name, _, value = item.strip().partition("=")
            if name:
                pairs.append((name, value))
    return pairs


def _without_maider_cookies(head: Head) -> list[tuple[str, str]]:
    headers = [(n, v) for n, v in head.headers if n.lower() != "cookie"]
    kept = [f"{n}={v}" for n, v in _cookies(head) if not n.startswith(COOKIE_PREFIX)]
    return headers + ([("Cookie", "; ".join(kept))] if kept else [])


def _closing(headers: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The headers with ``Connection: close``: the VM's server answers this request and closes the connection."""
    return [(n, v) for n, v in headers if n.lower() not in ("connection", "keep-alive")] + [("Connection", "close")]


def _reply(status: str, body: str, extra: tuple[tuple[str, str], ...] = (), html: bool = False) -> bytes:
    payload = body.encode()
    kind = "text/html; charset=utf-8" if html else "text/plain; charset=utf-8"
    headers = [("Content-Type", kind), ("Content-Length", str(len(payload))), ("Connection", "close"),
               ("Cache-Control", "no-store"), ("X-Content-Type-Options", "nosniff"), *extra]
    return (f"HTTP/1.1 {status}\r\n" + "".join(f"{n}: {v}\r\n" for n, v in headers) + "\r\n").encode() + payload


def refuse_host() -> bytes:
    return _reply("403 Forbidden", "maider's tunnel only answers requests addressed to 127.0.0.1 or localhost.\n")


NOT_HTTP = _reply("400 Bad Request", "maider's tunnel expects an HTTP request.\n")
HEAD_TOO_LARGE = _reply("431 Request Header Fields Too Large", "Request head too large.\n")
OPEN_FROM_PANEL = _reply(
    "403 Forbidden",
    "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Open WebUI via maider</title></head>"
    "<body style=\"font:15px/1.5 system-ui,sans-serif;margin:2em\"><h1>Open WebUI is reached through maider</h1>"
    "<p>Open Open WebUI from the maider panel (the session's page, <em>Open in a new tab</em>): "
    "it signs this browser in. Links from the panel work once and for a minute.</p></body></html>", html=True)


def decide(head_bytes: bytes, rest: bytes, front: Front, port: int, access: WebUiAccess | None) -> Decision:
    """What to do with a connection whose first request head is ``head_bytes`` (``rest`` followed it)."""
    if not head_bytes and rest:
        return Decision(reply=HEAD_TOO_LARGE)
    head = parse_head(head_bytes)
    if head is None:
        return Decision(reply=NOT_HTTP)
    hosts = head.values("host")
    if len(hosts) != 1 or not host_is_local(hosts[0], port):
        return Decision(reply=refuse_host())
    if front == "http":
        if COOKIE_PREFIX.encode() not in head_bytes:
            return Decision(forward=head_bytes + b"\r\n\r\n" + rest)  # the common case: forwarded untouched
        # A browser carrying maider's cookies (someone opened the API port in a tab): strip them, and make this the
        # connection's only request, so no later request on it can carry them to the VM unchecked.
        return Decision(forward=Head(head.method, head.target, head.version,
                                     _closing(_without_maider_cookies(head))).encode() + rest)
    return _decide_webui(head, rest, port, access or WebUiAccess())


def _decide_webui(head: Head, rest: bytes, port: int, access: WebUiAccess) -> Decision:
    url = urlsplit(head.target)
    if url.path == ENTER_PATH:
        token = (parse_qs(url.query).get("t") or [""])[0]
        value = access.redeem(token)
        if value is None:
            return Decision(reply=OPEN_FROM_PANEL)
        cookie = (f"{cookie_name(port)}={value}; Path=/; HttpOnly; SameSite=Strict; "
                  f"Max-Age={int(COOKIE_TTL_S)}")
        return Decision(reply=_reply("303 See Other", "Signed in; continue to Open WebUI.\n",
                                     (("Location", "/"), ("Set-Cookie", cookie), ("Referrer-Policy", "no-referrer"))))
    presented = dict(_cookies(head)).get(cookie_name(port))
    if not access.admits(presented):
        return Decision(reply=OPEN_FROM_PANEL)
    headers = _without_maider_cookies(head)
    upgrade = any(n.lower() == "upgrade" for n, _ in headers)
    if not upgrade:  # one request per connection, so each request passes this door
        headers = _closing(headers)
    return Decision(forward=Head(head.method, head.target, head.version, headers).encode() + rest)
