"""Reading an OpenAI-style server-sent event stream as it passes through: token usage, and the usage-only chunk.

The proxy asks vLLM for ``stream_options.include_usage`` so it can count every user's tokens; when the client did
not ask for it, the extra usage-only chunk (``"choices": []``) is taken out again, so the client sees exactly what it
asked for. Events pass through whole and at once: nothing waits for more than the rest of its own event.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

_EVENT_END = re.compile(rb"\r?\n\r?\n")


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0


def usage_from(body: object) -> Usage | None:
    """The ``usage`` object of a completion (or a stream chunk), if it has one with numbers."""
    if not isinstance(body, dict) or not isinstance(body.get("usage"), dict):
        return None
    usage = body["usage"]
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return Usage(prompt, completion)


class SseUsageReader:
    """Feed it the upstream bytes; it returns the bytes to send on now and remembers the last usage seen."""

    def __init__(self, drop_usage_chunk: bool) -> None:
        self._drop_usage_chunk = drop_usage_chunk
        self._pending = b""
        self.usage: Usage | None = None

    def feed(self, data: bytes) -> bytes:
        self._pending += data
        out = []
        while True:
            match = _EVENT_END.search(self._pending)
            if match is None:
                break
            event, self._pending = self._pending[:match.end()], self._pending[match.end():]
            if self._keep(event):
                out.append(event)
        return b"".join(out)

    def flush(self) -> bytes:
        rest, self._pending = self._pending, b""
        return rest if self._keep(rest) else b""

    def _keep(self, event: bytes) -> bool:
        if b'"prompt_tokens"' not in event:  # cheap test first: only the usage chunk carries numbers
            return True
        for line in event.splitlines():
            if not line.startswith(b"data:"):
                continue
            try:
                chunk = json.loads(line[5:])
            except ValueError:
                return True
            usage = usage_from(chunk)
            if usage is not None:
                self.usage = usage
                if self._drop_usage_chunk and chunk.get("choices") == []:
                    return False
        return True
