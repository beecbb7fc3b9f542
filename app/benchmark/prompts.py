"""Benchmark prompts: vLLM's ``random`` dataset (fixed lengths) and a ShareGPT-format JSON file.

There is no tokenizer here, so lengths are set in words that real tokenizers (and the demo's four-characters-per-
token count) read as one token each: a space and three letters. The server's ``usage`` gives the true counts.
"""
from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path

DEFAULT_INPUT_LEN = 1024  # vLLM's random dataset defaults
DEFAULT_OUTPUT_LEN = 128
SHAREGPT_MIN_LEN = 4  # vLLM drops conversations shorter than this (prompt or reply)
SHAREGPT_MAX_PROMPT = 1024  # ... and prunes longer prompts
SHAREGPT_MAX_TOTAL = 2048
CHARS_PER_TOKEN = 4
_WORDS = ("the", "and", "for", "are", "but", "not", "you", "all", "any", "can", "had", "her", "was", "one", "our",
          "out", "day", "get", "has", "him", "his", "how", "man", "new", "now", "old", "see", "two", "way", "who",
          "did", "its", "let", "put", "say", "she", "too", "use", "map", "key", "row", "log", "sum", "max", "min")


class DatasetError(ValueError):
    """The prompt file cannot be used; the message says why."""


@dataclass(frozen=True)
class Prompt:
    text: str
    output_len: int  # max_tokens to ask for
    input_len: int  # expected prompt tokens (the server's usage is what counts)


def random_prompts(num_prompts: int, input_len: int = DEFAULT_INPUT_LEN, output_len: int = DEFAULT_OUTPUT_LEN,
                   seed: int = 0) -> list[Prompt]:
    """``num_prompts`` different prompts of ``input_len`` words, each asking for exactly ``output_len`` tokens."""
    rng = random.Random(seed)
    return [Prompt("".join(" " + rng.choice(_WORDS) for _ in range(input_len)), output_len, input_len)
            for _ in range(num_prompts)]


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // CHARS_PER_TOKEN)


def sharegpt_prompts(path: Path, num_prompts: int, output_len: int | None = None, seed: int = 0) -> list[Prompt]:
    """Prompts from a ShareGPT file: the first human turn, with the first reply's length as max_tokens (unless
    ``output_len`` is given); filtered as vLLM filters, shuffled with ``seed``, repeated if the file is short."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise DatasetError(f"{path} is not JSON: {exc}") from None
    if not isinstance(data, list):
        raise DatasetError(f"{path} must hold a JSON list of conversations (ShareGPT format)")
    usable: list[Prompt] = []
    for item in data:
        turns = item.get("conversations") if isinstance(item, dict) else None
        if not isinstance(turns, list) or len(turns) < 2:
            continue
        if not all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in turns[:2]):
            continue
        prompt, reply = turns[0]["value"], turns[1]["value"]
        prompt_len = _estimate_tokens(prompt)
        reply_len = output_len or _estimate_tokens(reply)
        if prompt_len < SHAREGPT_MIN_LEN or reply_len < SHAREGPT_MIN_LEN and output_len is None:
            continue
        if output_len is None and (prompt_len > SHAREGPT_MAX_PROMPT or prompt_len + reply_len > SHAREGPT_MAX_TOTAL):
            continue
        usable.append(Prompt(prompt, reply_len, prompt_len))
    if not usable:
        raise DatasetError(f"{path} has no usable conversation (a human turn and a reply of at least "
                           f"{SHAREGPT_MIN_LEN} tokens each)")
    random.Random(seed).shuffle(usable)
    return [usable[i % len(usable)] for i in range(num_prompts)]
