"""maider's entrypoint for the vLLM container: build vLLM's argv from the environment (/opt/llm/.env), then exec it.

The compose file passes /opt/llm/.env as env_file, and ``docker compose up -d --force-recreate vllm`` re-reads it,
so a setting maider changes in .env (a heal, a model switch) is used at the next start. The argv is the one
``app.domain.vllm_env.vllm_command_args`` describes; ``--print-args`` shows it as JSON (maider's tests hold the two
together). The API key is never on the command line: vLLM reads VLLM_API_KEY from its environment (older vLLM logs
its arguments unmasked). maider's own keys are taken out of vLLM's environment, which would warn about each
``VLLM_*`` name it does not know.
"""
import json
import os
import shlex
import sys

TRUE_WORDS = {"1", "true", "yes", "on"}
# .env keys read here (or by Open WebUI) and meant for no one else; VLLM_API_KEY and NCCL_P2P_DISABLE stay.
MAIDER_KEYS = ("MODEL_ID", "SERVED_MODEL_NAME", "VLLM_MAX_MODEL_LEN", "VLLM_GPU_MEMORY_UTILIZATION",
               "VLLM_MAX_NUM_SEQS", "VLLM_TENSOR_PARALLEL_SIZE", "VLLM_DTYPE", "VLLM_KV_CACHE_DTYPE",
               "VLLM_ENFORCE_EAGER", "VLLM_EXTRA_ARGS", "VLLM_IMAGE", "OPEN_WEBUI_IMAGE", "WEBUI_SECRET_KEY")


def build_args(env):
    """vLLM server flags from the .env keys."""
    args = [
        "--model", env["MODEL_ID"],
        "--served-model-name", env["SERVED_MODEL_NAME"],
        "--host", "0.0.0.0",
        "--port", "8000",
        "--max-model-len", env["VLLM_MAX_MODEL_LEN"],
        "--gpu-memory-utilization", "%.2f" % float(env["VLLM_GPU_MEMORY_UTILIZATION"]),
        "--max-num-seqs", env["VLLM_MAX_NUM_SEQS"],
        "-tp", env["VLLM_TENSOR_PARALLEL_SIZE"],
        "--dtype", env.get("VLLM_DTYPE") or "auto",
        "--kv-cache-dtype", env.get("VLLM_KV_CACHE_DTYPE") or "auto",
    ]
    if (env.get("VLLM_ENFORCE_EAGER") or "").strip().lower() in TRUE_WORDS:
        args.append("--enforce-eager")
    return args + shlex.split(env.get("VLLM_EXTRA_ARGS") or "")


def main():
    env = dict(os.environ)
    if "--print-args" in sys.argv[1:]:
        print(json.dumps(build_args(env)))
        return 0
    api_key = env.get("VLLM_API_KEY") or ""
    if not api_key:
        print("maider: VLLM_API_KEY is empty in /opt/llm/.env; refusing to start vLLM without an API key",
              file=sys.stderr)
        return 2
    # huggingface_hub reads HF_TOKEN first; an empty token must not be sent at all.
    token = env.pop("HUGGING_FACE_HUB_TOKEN", "") or env.get("HF_TOKEN", "")
    env.pop("HF_TOKEN", None)
    if token:
        env["HF_TOKEN"] = token
        env["HUGGING_FACE_HUB_TOKEN"] = token
    env.setdefault("HF_XET_HIGH_PERFORMANCE", "1")
    args = build_args(env)
    for key in MAIDER_KEYS:
        env.pop(key, None)
    print("maider: starting vLLM: " + " ".join(shlex.quote(arg) for arg in args), flush=True)
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server"] + args
    os.execvpe(argv[0], argv, env)
    return 1


if __name__ == "__main__":
    sys.exit(main())
