"""Sizing facts for any Hugging Face model id: maider's catalog first, else the Hub, cached on disk.

From the Hub maider reads two things through huggingface_hub: the repo's file listing with sizes
(``HfApi.model_info(files_metadata=True)``, which also gives the parameter count) and ``config.json``
(``hf_hub_download`` at the listed commit). The HF token is sent only to the Hub and never appears in an error message,
a log line or the cache file. ``HF_ENDPOINT`` is read at call time, so a mirror (or a test's fake Hub) can be used.
"""
from __future__ import annotations

import json
import logging
import os
import re
import time
from dataclasses import asdict
from datetime import timedelta
from enum import Enum
from pathlib import Path
from typing import Any

from app.domain.models_catalog import catalog_facts
from app.domain.sizing import ModelFacts, facts_from_config
from app.errors import UserError

log = logging.getLogger(__name__)

CACHE_TTL = timedelta(days=7)  # configs and shard sizes of a published model rarely change
HUB_TIMEOUT = timedelta(seconds=15)
CACHE_SUBDIR = Path("cache") / "models"
HF_DOWNLOAD_SUBDIR = Path("cache") / "hf"
# The Hub's own rule: namespace/name, letters, digits, '-', '_', '.', at most 96 characters each.
_MODEL_ID = re.compile(r"^[A-Za-z0-9][\w.-]{0,95}/[A-Za-z0-9][\w.-]{0,95}$")
_TRUE = {"1", "true", "yes", "on"}


class LookupFailure(str, Enum):
    INVALID_ID = "invalid_id"  # not "org/name"
    OFFLINE = "offline"  # offline mode asked for; nothing was sent
    UNREACHABLE = "unreachable"  # network error or Hub 5xx
    GATED = "gated"  # licence not accepted / token missing
    NOT_FOUND = "not_found"  # no such repo (or private and the token cannot see it)
    NO_CONFIG = "no_config"  # repo has no config.json
    UNSIZABLE = "unsizable"  # config or weights lack what sizing needs

    @property
    def is_network(self) -> bool:
        """True when the model may well be fine and only the Hub could not be asked."""
        return self in (LookupFailure.OFFLINE, LookupFailure.UNREACHABLE)


class ModelLookupError(UserError):
    """The model could not be sized; ``failure`` says why so callers decide without reading the message."""

    def __init__(self, message: str, model_id: str, failure: LookupFailure) -> None:
        super().__init__(message)
        self.model_id = model_id
        self.failure = failure


def validate_model_id(model_id: str) -> str:
    """Return the stripped id or raise ModelLookupError when it is not ``org/name``."""
    cleaned = (model_id or "").strip()
    if not _MODEL_ID.match(cleaned) or ".." in cleaned or cleaned.endswith("."):
        raise ModelLookupError(
            f"'{cleaned}' is not a Hugging Face model id: use the form org/name, e.g. Qwen/Qwen2.5-Coder-7B-Instruct",
            cleaned, LookupFailure.INVALID_ID)
    return cleaned


def _cache_file(home: Path, model_id: str) -> Path:
    return home / CACHE_SUBDIR / (model_id.lower().replace("/", "--") + ".json")


def _read_cache(path: Path, now: float, allow_stale: bool) -> ModelFacts | None:
    try:
        data = json.loads(path.read_text())
        facts = data["facts"]
        facts["architectures"] = tuple(facts.get("architectures") or ())
        cached = ModelFacts(**facts)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not allow_stale and now - float(data.get("fetched_at", 0)) > CACHE_TTL.total_seconds():
        return None
    return cached


def _write_cache(path: Path, facts: ModelFacts, now: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"fetched_at": now, "facts": asdict(facts)}))
    os.replace(tmp, path)  # atomic: a concurrent reader never sees half a file


def _is_offline_requested(offline: bool) -> bool:
    from huggingface_hub import constants

    return offline or os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE or constants.is_offline_mode()


def _weights_bytes(siblings: list[Any]) -> int | None:
    """Sum of the root-level .safetensors vLLM would load (``model*`` shards when a repo also ships others)."""
    root = [s for s in siblings if s.rfilename.endswith(".safetensors") and "/" not in s.rfilename]
    preferred = [s for s in root if s.rfilename.startswith("model")]
    chosen = preferred or root
    sizes = [s.size for s in chosen if isinstance(s.size, int)]
    return sum(sizes) if sizes and len(sizes) == len(chosen) else None


def _scrub(text: str, secret: str | None) -> str:
    first_line = (text.strip().splitlines() or [""])[0][:200]
    return first_line.replace(secret, "***") if secret else first_line


def _transport_errors() -> tuple[type[Exception], ...]:
    """Network failures of the HTTP client huggingface_hub uses (httpx2 in 2.x, httpx in 1.x)."""
    errors: list[type[Exception]] = []
    for module_name in ("httpx2", "httpx"):
        try:
            module = __import__(module_name)
        except ImportError:
            continue
        errors.append(module.TransportError)
    return tuple(errors)


def _fetch(model_id: str, hf_token: str | None, home: Path, endpoint: str | None) -> ModelFacts:
    """Ask the Hub; translate every failure into a ModelLookupError with a message that is safe to show."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import (
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        OfflineModeIsEnabled,
        RemoteEntryNotFoundError,
        RepositoryNotFoundError,
    )

    # False, not None: without our token the library would fall back to one saved on this laptop, which the VM
    # will not have -- sizing must see what the VM will see.
    token: str | bool = hf_token or False
    timeout = HUB_TIMEOUT.total_seconds()
    try:
        info = HfApi(endpoint=endpoint).model_info(model_id, files_metadata=True, timeout=timeout, token=token)
        config_path = hf_hub_download(model_id, "config.json", revision=info.sha, endpoint=endpoint,
                                      cache_dir=home / HF_DOWNLOAD_SUBDIR, token=token, etag_timeout=timeout)
        config = json.loads(Path(config_path).read_text())
    except GatedRepoError:
        raise ModelLookupError(
            f"{model_id} is gated: accept its licence on huggingface.co and set HUGGING_FACE_HUB_TOKEN"
            + (" (the token that is set has not been granted access)" if hf_token else ""),
            model_id, LookupFailure.GATED) from None
    except RepositoryNotFoundError:
        raise ModelLookupError(
            f"no model {model_id} on Hugging Face: check the id"
            + ("" if hf_token else " (if it is private, set HUGGING_FACE_HUB_TOKEN)"),
            model_id, LookupFailure.NOT_FOUND) from None
    except RemoteEntryNotFoundError:
        raise ModelLookupError(f"{model_id} has no config.json: vLLM cannot load it as a transformers model",
                               model_id, LookupFailure.NO_CONFIG) from None
    except (*_transport_errors(), OfflineModeIsEnabled, LocalEntryNotFoundError) as exc:
        raise ModelLookupError(
            f"could not reach Hugging Face to size {model_id}: {_scrub(str(exc), hf_token) or type(exc).__name__}; "
            "maider can still launch it but cannot check it fits", model_id, LookupFailure.UNREACHABLE) from None
    except HfHubHTTPError as exc:
        status = exc.response.status_code if exc.response is not None else 0
        if status >= 500 or status in (408, 429) or status == 0:
            raise ModelLookupError(
                f"could not reach Hugging Face to size {model_id}: the Hub answered HTTP {status or 'nothing'}; "
                "maider can still launch it but cannot check it fits", model_id, LookupFailure.UNREACHABLE) from None
        raise ModelLookupError(f"Hugging Face refused to describe {model_id} (HTTP {status}): check the id and "
                               "HUGGING_FACE_HUB_TOKEN", model_id, LookupFailure.UNSIZABLE) from None
    except ValueError:
        raise ModelLookupError(f"{model_id}'s config.json is not valid JSON: maider cannot size it",
                               model_id, LookupFailure.UNSIZABLE) from None
    params = info.safetensors.total if info.safetensors else None
    try:
        return facts_from_config(info.id or model_id, config, _weights_bytes(info.siblings or []), params)
    except ValueError as exc:
        raise ModelLookupError(str(exc), model_id, LookupFailure.UNSIZABLE) from None


def lookup_model(model_id: str, hf_token: str | None, home: Path, *, offline: bool = False,
                 endpoint: str | None = None, now: float | None = None) -> ModelFacts:
    """Sizing facts for ``model_id``: catalog, then a fresh cache entry, then the Hub (``endpoint`` or HF_ENDPOINT).

    Offline (``offline=True`` or ``HF_HUB_OFFLINE``) a stale cache entry is still used; without one the error says
    that sizing was not possible. Raises ModelLookupError, never anything else for Hub trouble.
    """
    model_id = validate_model_id(model_id)
    known = catalog_facts(model_id)
    if known is not None:
        return known
    now = time.time() if now is None else now
    home = Path(home)
    cache_path = _cache_file(home, model_id)
    cached = _read_cache(cache_path, now, allow_stale=False)
    if cached is not None:
        return cached
    if _is_offline_requested(offline):
        stale = _read_cache(cache_path, now, allow_stale=True)
        if stale is not None:
            return stale
        raise ModelLookupError(
            f"could not reach Hugging Face to size {model_id}: offline mode is on and it is not in maider's cache; "
            "maider can still launch it but cannot check it fits", model_id, LookupFailure.OFFLINE)
    endpoint = endpoint or os.environ.get("HF_ENDPOINT") or None
    try:
        facts = _fetch(model_id, hf_token, home, endpoint)
    except ModelLookupError as exc:
        stale = _read_cache(cache_path, now, allow_stale=True) if exc.failure.is_network else None
        if stale is None:
            raise
        log.info("Hugging Face unreachable; sizing %s from an older cache entry", model_id)
        return stale
    try:
        _write_cache(cache_path, facts, now)
    except OSError as exc:  # a read-only home costs a later lookup, not this answer
        log.warning("could not cache sizing facts for %s: %s", model_id, exc)
    return facts
