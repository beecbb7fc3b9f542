"""Real vLLM start-up failures on this machine, each named by maider's diagnosis (``maider diagnose``).

Each start uses a .env rendered by maider with one thing wrong; vLLM refuses within seconds, before loading
anything. The same logs, captured once, are fixtures in tests/fixtures/vllm_logs (cpu_*.log) for the fast suite.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from real_vllm_server import MODELS, free_port, run_failing_start, settings_for, tiny_model

from app.domain.diagnosis import Cause, diagnose

MODEL = "tiny-qwen2-a"


def _unknown_architecture() -> Path:
    """The tiny model under an architecture name vLLM has never heard of (a model newer than the image)."""
    folder = MODELS / "tiny-unknown-arch"
    shutil.copytree(tiny_model(MODEL), folder, dirs_exist_ok=True)
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["MaiderNovelForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    return folder


CASES = {
    "context_longer_than_the_model": (
        lambda port: settings_for(tiny_model(MODEL), "tiny-coder", port, max_model_len=65536),
        Cause.MAX_LEN_BEYOND_MODEL),
    "unknown_architecture": (lambda port: settings_for(_unknown_architecture(), "tiny-coder", port),
                             Cause.UNSUPPORTED_ARCH),
    "missing_model_folder": (lambda port: settings_for(Path("/opt/models/no-such-model"), "tiny-coder", port),
                             Cause.MODEL_PATH_MISSING),
    "bad_flag": (lambda port: settings_for(tiny_model(MODEL), "tiny-coder", port,
                                           extra_args="--enable-auto-tool-choise"), Cause.BAD_FLAG),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_failed_start_is_named(tier_ready: None, tmp_path: Path, case: str) -> None:
    make_settings, cause = CASES[case]
    log = run_failing_start(tmp_path / case, make_settings(free_port()))
    assert "maider: starting vLLM:" in log
    diagnosis = diagnose(log)
    assert diagnosis is not None, log[-2000:]
    assert diagnosis.cause is cause, diagnosis
    if cause is Cause.MAX_LEN_BEYOND_MODEL:
        assert diagnosis.numbers == {"max_model_len": 65536, "derived_max_len": 32768}
        assert diagnosis.healable  # maider lowers VLLM_MAX_MODEL_LEN to the model's own limit
