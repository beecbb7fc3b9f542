"""What a request may carry, defined once: the API parses bodies with these rules, the panel's forms validate with
the same rules, and the OpenAPI document publishes them.

A rule is a small object with ``check`` (return the value or raise ``ValueError`` with a sentence for the user) and
``schema`` (its JSON Schema, as OpenAPI 3.0 writes it). Text rules match with ``re.fullmatch``, so no newline slips
past a ``$``; whole numbers refuse floats and JSON booleans; flags accept only ``true``/``false``.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Protocol

from flask import request
from werkzeug.exceptions import UnsupportedMediaType

from app.config import PROVIDER_NAMES
from app.domain.sizing import MAX_CONTEXT_TOKENS, MIN_CONTEXT_TOKENS
from app.errors import MalformedRequest
from app.services.sessions import NAME_PATTERN

MAX_TENSOR_PARALLEL = 16  # the most GPUs one plan offers; the same bound as VLLM_TENSOR_PARALLEL_SIZE in .env
MAX_DB_ID = 2 ** 63 - 1  # SQLite's INTEGER: a larger id cannot name a row
_SHOWN_CHARS = 40  # how much of a refused value an error message repeats
_UNKNOWN_SHOWN = 5  # unknown fields named in one error


class Rule(Protocol):
    def check(self, value: Any) -> Any: ...
    def schema(self) -> dict[str, Any]: ...


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type, for messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "a whole number"
    if isinstance(value, float):
        return "a number with a fraction"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    return "an object"


def _shown(value: str) -> str:
    """A refused value as a message repeats it: quoted, escaped and short (it may be hostile)."""
    text = value if len(value) <= _SHOWN_CHARS else value[:_SHOWN_CHARS] + "…"
    return ascii(text)


@dataclass(frozen=True)
class Text:
    """A string that must match ``pattern`` as a whole."""

    pattern: str
    max_length: int
    hint: str  # what a valid one looks like, e.g. "use lower-case letters, digits and dashes"
    example: str
    what: str = "valid here"  # what the value must be, e.g. "a valid session name"

    def check(self, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"must be a string, not {_json_type(value)}")
        if len(value) > self.max_length:
            raise ValueError(f"must be at most {self.max_length} characters, not {len(value):,}")
        if re.fullmatch(self.pattern, value) is None:
            raise ValueError(f"{_shown(value)} is not {self.what}: {self.hint}")
        return value

    def schema(self) -> dict[str, Any]:
        # JSON Schema patterns search; anchoring both ends (ECMA '$' matches only at the very end) makes it fullmatch.
        return {"type": "string", "minLength": 1, "maxLength": self.max_length, "pattern": f"^(?:{self.pattern})$",
                "example": self.example}


@dataclass(frozen=True)
class Whole:
    """A whole number within bounds (a JSON integer: not 1.0, not true)."""

    minimum: int
    maximum: int
    example: int

    def check(self, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            shown = f" {_shown(value)}" if isinstance(value, str) else ""
            raise ValueError(f"must be a whole number, not {_json_type(value)}{shown}")
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"must be between {self.minimum:,} and {self.maximum:,}")
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "integer", "minimum": self.minimum, "maximum": self.maximum, "example": self.example}


@dataclass(frozen=True)
class Amount:
    """A number within bounds (a JSON integer or decimal, not true)."""

    minimum: float
    maximum: float
    example: float

    def check(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"must be a number, not {_json_type(value)}")
        if not self.minimum <= value <= self.maximum:
            raise ValueError(f"must be between {self.minimum:g} and {self.maximum:,g}")
        return float(value)

    def schema(self) -> dict[str, Any]:
        return {"type": "number", "minimum": self.minimum, "maximum": self.maximum, "example": self.example}


@dataclass(frozen=True)
class Flag:
    """A JSON boolean: the string "false" is refused, never read as true."""

    def check(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"must be true or false (a JSON boolean), not {_json_type(value)}")
        return value

    def schema(self) -> dict[str, Any]:
        return {"type": "boolean"}


SESSION_NAME = Text(NAME_PATTERN, 40, "use lower-case letters, digits and dashes (at most 40), starting with a "
                                      "letter or digit", "qwen-coder-1", what="a valid session name")
MODEL_ID = Text(r"[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}", 193,
                "use a Hugging Face id like Qwen/Qwen2.5-Coder-7B-Instruct-AWQ", "Qwen/Qwen2.5-Coder-7B-Instruct-AWQ",
                what="a model id")
# Linode us-ord, DigitalOcean nyc2, AWS us-east-1, your own host "own"; AWS plans have a dot (g6.xlarge).
REGION = Text(r"[a-z][a-z0-9-]{2,31}", 32, "use one like us-ord, nyc2 or us-east-1", "us-ord", what="a region id")
PLAN = Text(r"[a-z0-9][a-z0-9.-]{0,63}", 64, "use one like g2-gpu-rtx4000a1-s or g6.xlarge", "g2-gpu-rtx4000a1-s",
            what="a plan id")
PROVIDER = Text("|".join(PROVIDER_NAMES), 16, f"use one of {', '.join(PROVIDER_NAMES)}", "linode",
                what="a provider maider knows")
# vLLM's --served-model-name and aider's model name: no markup, spaces or control characters.
SERVED_NAME = Text(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,63}", 64,
                   "use letters, digits, '.', '_', '-' or '/' (at most 64), starting with a letter or digit", "coder",
                   what="a served model name")
# An absolute path without control characters; the service then checks it is a directory the server's user owns.
WORKDIR = Text(r"/[^\x00-\x1f\x7f]{0,1023}", 1024, "use your project folder's full path", "/home/me/project",
               what="an absolute path")
CONTEXT = Whole(MIN_CONTEXT_TOKENS, MAX_CONTEXT_TOKENS, 32768)
TENSOR_PARALLEL = Whole(1, MAX_TENSOR_PARALLEL, 1)
EVENT_ID = Whole(0, MAX_DB_ID, 0)
FLAG = Flag()
IDLE_MINUTES = Whole(0, 7 * 24 * 60, 60)  # the bounds of WATCHDOG_TIMEOUT_MINUTES, and 0 for "no idle autostop"
MAX_HOURS = Amount(0, 24 * 31, 8)  # as MAX_LIFETIME_HOURS
BUDGET_USD = Amount(0, 1_000_000, 20)  # as BUDGET_USD


@dataclass(frozen=True)
class Body:
    """A JSON object request body: these fields and no others; absent and null mean "not given"."""

    title: str  # the OpenAPI component name
    fields: dict[str, Rule]
    required: tuple[str, ...] = ()
    descriptions: dict[str, str] = field(default_factory=dict)

    def parse(self, data: Any) -> dict[str, Any]:
        """Every field's checked value (None when not given); MalformedRequest naming each bad field."""
        if not isinstance(data, dict):
            raise MalformedRequest(message=f"the request body must be a JSON object, not {_json_type(data)}")
        problems: dict[str, str] = {}
        unknown = [key for key in data if key not in self.fields]
        for key in unknown[:_UNKNOWN_SHOWN]:
            problems[key[:_SHOWN_CHARS]] = f"is not a field of this request (known: {', '.join(self.fields)})"
        values: dict[str, Any] = {}
        for name, rule in self.fields.items():
            value = data.get(name)
            if value is None:
                if name in self.required:
                    problems[name] = "is required"
                values[name] = None
                continue
            try:
                values[name] = rule.check(value)
            except ValueError as exc:
                problems[name] = str(exc)
        if problems:
            raise MalformedRequest(problems)
        return values

    def schema(self) -> dict[str, Any]:
        properties = {}
        for name, rule in self.fields.items():
            prop = rule.schema()
            if name not in self.required:
                prop["nullable"] = True
            if name in self.descriptions:
                prop["description"] = self.descriptions[name]
            properties[name] = prop
        schema: dict[str, Any] = {"type": "object", "properties": properties, "additionalProperties": False}
        if self.required:
            schema["required"] = list(self.required)
        return schema


LAUNCH = Body("LaunchRequest", {
    "name": SESSION_NAME, "workdir": WORKDIR, "provider": PROVIDER, "region": REGION, "plan": PLAN,
    "model_id": MODEL_ID,
    "served_name": SERVED_NAME, "max_model_len": CONTEXT, "tensor_parallel_size": TENSOR_PARALLEL,
    "keep_on_failure": FLAG, "idle_minutes": IDLE_MINUTES, "max_hours": MAX_HOURS, "budget_usd": BUDGET_USD,
}, descriptions={
    "name": "default: the model's name and the next free number",
    "workdir": "the project folder whose .env is read and where aider's files go (default: the server's folder); "
               "an existing directory owned by the server's user",
    "provider": "default: PROVIDER; with no plan either, the cheapest configured provider whose plan fits",
    "region": "default: REGION", "plan": "default: TYPE, else the cheapest plan in the region that fits",
    "model_id": "default: MODEL_ID", "served_name": "default: SERVED_MODEL_NAME",
    "max_model_len": "default: VLLM_MAX_MODEL_LEN", "tensor_parallel_size": "default: every GPU of the plan",
    "keep_on_failure": "keep a VM whose launch failed, for debugging (it is still billed)",
    "idle_minutes": "destroy the VM after this many idle minutes, 0 for never (default: WATCHDOG_TIMEOUT_MINUTES "
                    "when WATCHDOG_ENABLED)",
    "max_hours": "destroy the VM this many hours after it was created, 0 for no limit (default: MAX_LIFETIME_HOURS)",
    "budget_usd": "destroy the VM once it has cost this many US dollars, 0 for no cap (default: BUDGET_USD)",
})
SWITCH_MODEL = Body("SwitchModelRequest", {
    "model_id": MODEL_ID, "max_model_len": CONTEXT, "tensor_parallel_size": TENSOR_PARALLEL,
}, required=("model_id",))
CLEANUP = Body("CleanupRequest", {"session": SESSION_NAME, "force": FLAG}, descriptions={
    "session": "only this session (default: every live session)",
    "force": "with session: forget it although the provider was not asked (you deleted the VM by hand)",
})


def json_body() -> Any:
    """The request's JSON document: 415 unless it says it is JSON, 400 unless it parses (NaN and Infinity refused)."""
    if not request.is_json:
        raise UnsupportedMediaType("send the request body as JSON, with the header Content-Type: application/json")
    try:
        return json.loads(request.get_data(), parse_constant=_refuse_constant)
    except RecursionError:
        raise MalformedRequest(message="the request body is not valid JSON: it is nested too deeply") from None
    except ValueError as exc:
        raise MalformedRequest(message=f"the request body is not valid JSON: {exc}") from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def query_int(name: str, rule: Whole, default: int) -> int:
    """A whole-number query parameter; MalformedRequest when it is not one within the rule's bounds."""
    raw = request.args.get(name)
    if raw is None:
        return default
    if re.fullmatch(r"[0-9]{1,19}", raw) is None:
        raise MalformedRequest({name: f"must be a whole number, not {_shown(raw)}"})
    try:
        return rule.check(int(raw))
    except ValueError as exc:
        raise MalformedRequest({name: str(exc)}) from None

BODIES = (LAUNCH, SWITCH_MODEL, CLEANUP)
