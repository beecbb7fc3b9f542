"""aider hand-off: the ``.aider-env`` file, aider's model metadata, and the command the panel's copy button gives.

``.aider-env`` is ``source``d by the user's shell, so every value is single-quoted with ``'\\''`` for embedded
quotes: nothing in it can expand or execute. The command never contains the API key (the panel is HTML); it reads
the key from ``.aider-env`` at run time.
"""
from __future__ import annotations

AIDER_ENV_FILENAME = ".aider-env"
METADATA_FILENAME = ".aider.model.metadata.json"
DEFAULT_MAX_OUTPUT_TOKENS = 8192
SECONDS_PER_HOUR = 3600.0


def shell_quote(value: str) -> str:
    """POSIX single quotes; ``'`` becomes ``'\\''``. Unlike shlex.quote, always quotes, so the file looks uniform."""
    return "'" + value.replace("'", "'\\''") + "'"


def aider_model_name(served_name: str) -> str:
    """aider's name for a vLLM model: without the ``openai/`` prefix aider says "LLM Provider NOT provided"."""
    return f"openai/{served_name}"


def aider_env_file(api_port: int, webui_port: int, api_key: str, served_name: str, session_name: str) -> str:
    """The text of ``.aider-env`` for a session reached on the laptop's ``api_port``/``webui_port``."""
    values = {
        "OPENAI_API_BASE": f"http://127.0.0.1:{api_port}/v1",
        "OPENAI_API_KEY": api_key,
        "AIDER_MODEL": aider_model_name(served_name),
        "ACTUAL_API_PORT": str(api_port),
        "ACTUAL_WEBUI_PORT": str(webui_port),
        "MAIDER_SESSION": session_name,
    }
    lines = [f"# maider session {session_name}: source this file, then run aider (holds the API key: keep private)"]
    lines += [f"export {key}={shell_quote(value)}" for key, value in values.items()]
    return "\n".join(lines) + "\n"


def model_metadata(served_name: str, max_model_len: int, max_output_tokens: int | None = None,
                   hourly_price: float | None = None, output_tokens_per_second: float | None = None) -> dict:
    """aider's ``.aider.model.metadata.json`` content for the served model, with vLLM's real context length.

    Costs are 0 unless both the VM's hourly price and a measured output throughput are known; then the output cost
    per token is what the VM costs per generated token at that throughput (input tokens are free by comparison).
    """
    output_limit = max_output_tokens or min(DEFAULT_MAX_OUTPUT_TOKENS, max_model_len)
    output_cost = 0.0
    if hourly_price and output_tokens_per_second and hourly_price > 0 and output_tokens_per_second > 0:
        output_cost = hourly_price / SECONDS_PER_HOUR / output_tokens_per_second
    return {
        aider_model_name(served_name): {
            "max_tokens": max_model_len,
            "max_input_tokens": max_model_len,
            "max_output_tokens": output_limit,
            "input_cost_per_token": 0.0,
            "output_cost_per_token": output_cost,
            "litellm_provider": "openai",
            "mode": "chat",
        }
    }


def aider_command(env_file_path: str, metadata_path: str) -> str:
    """The copy-button command: sources ``.aider-env`` and starts aider with the metadata file; no secret in it."""
    return (f"source {shell_quote(env_file_path)} && "
            f"aider --model \"$AIDER_MODEL\" --model-metadata-file {shell_quote(metadata_path)}")


def proxy_aider_command(api_base: str, served_name: str, key_variable: str = "MAIDER_API_KEY") -> str:
    """A teammate's command: the panel's OpenAI-compatible proxy with their own key, read from an environment
    variable so the key never shows in the command."""
    return (f"OPENAI_API_BASE={shell_quote(api_base)} OPENAI_API_KEY=\"${key_variable}\" "
            f"aider --model {shell_quote('openai/' + served_name)}")
