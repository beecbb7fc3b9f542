"""Where a starting vLLM is, from the VM's stage file and vLLM's own log lines.

The phases feed the stage timeline (pull, download, load, warm-up) and the progress text on the session card.
"""
from __future__ import annotations

import re
from dataclasses import dataclass


@dataclass(frozen=True)
class Phase:
    key: str  # "pulling", "downloading", "loading", "warming", "serving"
    label: str  # what the user sees


PULLING = Phase("pulling", "Pulling container images")
DOWNLOADING = Phase("downloading", "Downloading model weights")
LOADING = Phase("loading", "Loading weights onto the GPU")
WARMING = Phase("warming", "Compiling and capturing CUDA graphs")
SERVING = Phase("serving", "vLLM is up; checking it answers")
PHASES = (PULLING, DOWNLOADING, LOADING, WARMING, SERVING)

_LOADING = re.compile(r"Starting to load model|Loading safetensors checkpoint shards")
_WARMING = re.compile(r"Loading weights took|Model loading took")
_SERVING = re.compile(r"Application startup complete|Uvicorn running on")
_SECONDS = re.compile(r"Model loading took ([\d.]+) GiB and ([\d.]+) seconds")


def startup_phase(stage_word: str, log_text: str) -> Phase:
    """The furthest phase the evidence shows."""
    if _SERVING.search(log_text):
        return SERVING
    if _WARMING.search(log_text):
        return WARMING
    if _LOADING.search(log_text):
        return LOADING
    if stage_word.strip() == "pulling":
        return PULLING
    return DOWNLOADING


def model_load_seconds(log_text: str) -> float | None:
    """vLLM's own 'Model loading took X GiB and Y seconds', when logged."""
    match = _SECONDS.search(log_text)
    return float(match.group(2)) if match else None
