#!/bin/bash
# maider: bring up the compose stack and report progress in the stage file (pulling -> starting -> running).
set -euo pipefail

STAGE_FILE='{{STAGE_FILE}}'
LLM_DIR='{{LLM_DIR}}'
HEALTH_URL='http://127.0.0.1:{{VLLM_PORT}}/health'

write_stage() {
    mkdir -p "$(dirname "$STAGE_FILE")"
    printf '%s\n' "$1" > "$STAGE_FILE.tmp"
    mv "$STAGE_FILE.tmp" "$STAGE_FILE"
    echo "maider: stage $1"
}

cd "$LLM_DIR"
write_stage pulling
for attempt in 1 2 3 4 5; do
    if docker compose pull --quiet; then
        break
    fi
    if [ "$attempt" -eq 5 ]; then
        echo "maider: docker compose pull failed 5 times" >&2
        exit 1
    fi
    sleep $((attempt * 10))
done

write_stage starting
docker compose up -d

# vLLM opens its port only after the weights are downloaded and loaded: wait as long as that takes.
# maider watches the container's logs meanwhile and heals by recreating it, which this loop survives.
until curl -fsS -o /dev/null --max-time 5 "$HEALTH_URL"; do
    sleep 5
done
write_stage running
