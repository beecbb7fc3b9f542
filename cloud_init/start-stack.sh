#!/bin/bash
# maider: bring up the compose stack and report progress in the stage file (pulling -> starting -> running).
# A start that waiting cannot fix (Docker Hub's pull limit, a multi-GPU load that went silent) is written as one line
# to the problem file, which maider reads with vLLM's log and diagnoses.
set -euo pipefail

STAGE_FILE='{{STAGE_FILE}}'
PROBLEM_FILE='{{PROBLEM_FILE}}'
LLM_DIR='{{LLM_DIR}}'
VLLM_CONTAINER='{{VLLM_CONTAINER}}'
HEALTH_URL='http://127.0.0.1:{{VLLM_PORT}}/health'
STALL_MINUTES=10  # NCCL peer-to-peer over PCIe passthrough can hang without printing anything
HF_CACHE_DIR='/var/lib/docker/volumes/{{HF_CACHE_VOLUME}}/_data'  # growing: weights still downloading
RATE_LIMITED=3  # exit status the unit does not restart on (RestartPreventExitStatus)

write_stage() {
    mkdir -p "$(dirname "$STAGE_FILE")"
    printf '%s\n' "$1" > "$STAGE_FILE.tmp"
    mv "$STAGE_FILE.tmp" "$STAGE_FILE"
    echo "maider: stage $1"
}

cache_bytes() {
    du -sb "$HF_CACHE_DIR" 2>/dev/null | cut -f1
}

report_problem() {
    mkdir -p "$(dirname "$PROBLEM_FILE")"
    printf '%s\n' "$1" > "$PROBLEM_FILE.tmp"
    mv "$PROBLEM_FILE.tmp" "$PROBLEM_FILE"
    echo "$1" >&2
}

cd "$LLM_DIR"
rm -f "$PROBLEM_FILE"
write_stage pulling
# Only what the prefetch did not already fetch: every pull of a Docker Hub image counts against its limit.
for attempt in 1 2 3 4 5; do
    if output="$(docker compose pull --quiet --policy missing 2>&1)"; then
        break
    fi
    echo "$output" >&2
    if grep -q toomanyrequests <<<"$output"; then
        report_problem "maider: Docker Hub refused the image pull: toomanyrequests (its pull rate limit for this VM's address)"
        exit "$RATE_LIMITED"
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
set -a
# shellcheck source=/dev/null
. '{{ENV_FILE}}'
set +a
last_line=""
quiet_since="$(date +%s)"
quiet_cache="$(cache_bytes)"
until curl -fsS -o /dev/null --max-time 5 "$HEALTH_URL"; do
    sleep 5
    line="$(docker logs --tail 1 --timestamps "$VLLM_CONTAINER" 2>&1 || true)"
    now="$(date +%s)"
    if [ "$line" != "$last_line" ]; then
        last_line="$line"
        quiet_since="$now"
        quiet_cache="$(cache_bytes)"
    elif [ "${VLLM_TENSOR_PARALLEL_SIZE:-1}" -gt 1 ] && [ $((now - quiet_since)) -ge $((STALL_MINUTES * 60)) ]; then
        size="$(cache_bytes)"
        if [ "$size" != "$quiet_cache" ]; then  # silent, but the weights are still arriving
            quiet_cache="$size"
            quiet_since="$now"
            continue
        fi
        report_problem "maider: vLLM printed nothing for $STALL_MINUTES minutes while loading on ${VLLM_TENSOR_PARALLEL_SIZE} GPUs (NCCL peer-to-peer hang)"
        quiet_since="$now"
    fi
done
rm -f "$PROBLEM_FILE"
write_stage running
