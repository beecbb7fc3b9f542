#!/bin/bash
# maider: pull both images and download the model weights into the Hugging Face cache volume while the
# NVIDIA driver installs, so the stack starts from warm caches. Best effort: the stack pulls anything missing.
# Only what vLLM loads is fetched (safetensors, configs, tokenizer), not a repo's .bin or GGUF duplicates.
set -uo pipefail

set -a
# shellcheck source=/dev/null
. '{{ENV_FILE}}'
set +a

for image in "$VLLM_IMAGE" "$OPEN_WEBUI_IMAGE"; do
    for attempt in 1 2 3; do
        if output="$(docker pull --quiet "$image" 2>&1)"; then
            break
        fi
        echo "$output" >&2
        # Docker Hub's pull limit does not lift in seconds: leave the image to the stack, which reports it.
        if grep -q toomanyrequests <<<"$output"; then
            break
        fi
        sleep $((attempt * 10))
    done
done

if [ -n "${PREFETCH_MODEL:-}" ]; then
    if [ -n "${HUGGING_FACE_HUB_TOKEN:-}" ]; then
        export HF_TOKEN="$HUGGING_FACE_HUB_TOKEN"
    fi
    # Labelled as the compose project's own volume, so compose adopts it instead of warning about a stranger.
    docker volume create --label com.docker.compose.project={{COMPOSE_PROJECT}} \
        --label com.docker.compose.volume=hf-cache '{{HF_CACHE_VOLUME}}' >/dev/null
    # The token reaches the container by name (-e HF_TOKEN), never on a command line.
    docker run --rm --name maider-prefetch \
        -e PREFETCH_MODEL -e HF_TOKEN -e HF_XET_HIGH_PERFORMANCE=1 \
        -v '{{HF_CACHE_VOLUME}}:/root/.cache/huggingface' \
        --entrypoint python3 "$VLLM_IMAGE" \
        -c 'import os; from huggingface_hub import snapshot_download; snapshot_download(os.environ["PREFETCH_MODEL"], allow_patterns=["*.json", "*.safetensors", "*.model", "*.tiktoken", "*.txt", "*.jinja"])' \
        || echo "maider: weight prefetch failed; vLLM will download the model itself" >&2
fi
echo "maider: prefetch done"
