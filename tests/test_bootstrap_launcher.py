"""The container's launcher: the API key reaches vLLM through its environment only, and vLLM sees none of maider's keys.

The launcher (``cloud_init/launch-vllm.py``) runs for real and execs ``python -m vllm.entrypoints.openai.api_server``;
here that module is a recorder on PYTHONPATH that writes down the argv and environment it was started with.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from app import PROJECT_ROOT
from app.domain import vm_contract
from app.domain.vllm_env import Images, VllmSettings, parse_env, render_env

API_KEY = "sk-launcher-PLANTED-4f1e"
LAUNCHER = PROJECT_ROOT / "cloud_init" / "launch-vllm.py"
RECORDER = """import json, os, sys
with open(os.environ["MAIDER_TEST_RECORD"], "w") as out:
    json.dump({"argv": sys.argv[1:], "env": dict(os.environ)}, out)
"""


def _start(tmp_path: Path, settings: VllmSettings) -> tuple[dict, str]:
    """Run the launcher on an .env rendered by maider; return what "vLLM" received and the launcher's output."""
    package = tmp_path / "vllm" / "entrypoints" / "openai"
    package.mkdir(parents=True)
    for folder in (tmp_path / "vllm", tmp_path / "vllm" / "entrypoints", package):
        (folder / "__init__.py").write_text("")
    (package / "api_server.py").write_text(RECORDER)
    record = tmp_path / "record.json"
    env_text = render_env(settings, API_KEY, "hf_PLANTEDhubtoken", "webui-PLANTED", Images())
    environ = {"PATH": os.environ.get("PATH", "/usr/bin"), "PYTHONPATH": str(tmp_path),
               "MAIDER_TEST_RECORD": str(record), **parse_env(env_text)}
    result = subprocess.run([sys.executable, str(LAUNCHER)], env=environ, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    return json.loads(record.read_text()), result.stdout + result.stderr


SETTINGS = VllmSettings("Qwen/Qwen2.5-Coder-7B-Instruct", "coder", 32768, 0.9, 1, 2, dtype="half",
                        extra_args="--enable-prefix-caching", nccl_p2p_disable=True)


def test_the_api_key_is_not_on_vllms_command_line_but_in_its_environment(tmp_path: Path) -> None:
    started, output = _start(tmp_path, SETTINGS)
    assert "--api-key" not in started["argv"]
    assert API_KEY not in " ".join(started["argv"])
    assert started["env"]["VLLM_API_KEY"] == API_KEY  # vLLM's own variable: it requires the key from clients
    assert API_KEY not in output
    argv = started["argv"]
    assert argv[argv.index("--model") + 1] == "Qwen/Qwen2.5-Coder-7B-Instruct"
    assert argv[argv.index("-tp") + 1] == "2" and argv[argv.index("--dtype") + 1] == "half"
    assert argv[-1] == "--enable-prefix-caching"


def test_vllm_sees_no_vllm_variable_of_maiders_own(tmp_path: Path) -> None:
    """vLLM warns "Unknown vLLM environment variable" for every VLLM_* name it does not define."""
    started, _output = _start(tmp_path, SETTINGS)
    vllm_names = sorted(name for name in started["env"] if name.startswith("VLLM_"))
    assert vllm_names == ["VLLM_API_KEY"]
    maiders_own = [key for key in vm_contract.ENV_KEYS if key.startswith("VLLM_") and key != "VLLM_API_KEY"]
    assert maiders_own and not set(maiders_own) & set(started["env"])
    # what vLLM and the libraries under it do read is still there
    assert started["env"]["NCCL_P2P_DISABLE"] == "1"
    assert started["env"]["HF_TOKEN"] == "hf_PLANTEDhubtoken"
    assert "WEBUI_SECRET_KEY" not in started["env"]  # Open WebUI's secret is none of vLLM's business


def test_every_vllm_variable_it_sees_is_one_real_vllm_defines(tmp_path: Path) -> None:
    """Checked against the variable list of the real vLLM the real-vLLM tier installs (scripts/real-vllm-env)."""
    vllm_python = PROJECT_ROOT / ".venv-vllm" / "bin" / "python"
    if not vllm_python.exists():
        pytest.skip("no .venv-vllm (scripts/real-vllm-env makes it): vLLM's own variable list is not here")
    known = json.loads(subprocess.run(
        [str(vllm_python), "-c", "import json, vllm.envs as e; print(json.dumps(list(e.environment_variables)))"],
        capture_output=True, text=True, check=True, timeout=120).stdout)
    started, _output = _start(tmp_path, SETTINGS)
    assert "VLLM_API_KEY" in known  # the key vLLM reads instead of --api-key
    assert [name for name in started["env"] if name.startswith("VLLM_") and name not in known] == []
