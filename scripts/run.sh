#!/usr/bin/env bash
# Starts tritonserver (vlcache backend, triton_models/) and the gateway on
# 127.0.0.1 with the tiny test model, prints curl commands to paste, and stops
# both on Ctrl-C. `make run` builds first and calls this.
#
# Environment (defaults): VLCACHE_BUILD_DIR (build), GATEWAY_PORT (8080),
# TRITON_HTTP_PORT (8000), TRITON_GRPC_PORT (8001), TRITON_METRICS_PORT (8002),
# MODEL_NAME (tiny-llava), MODEL_DIR (testdata/tiny-llava-random),
# GATEWAY_BIN (gateway/bin/vlcache-gateway); extra arguments go to the gateway.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export VLCACHE_BUILD_DIR=${VLCACHE_BUILD_DIR:-$root/build}
gateway_port=${GATEWAY_PORT:-8080}
http_port=${TRITON_HTTP_PORT:-8000}
grpc_port=${TRITON_GRPC_PORT:-8001}
metrics_port=${TRITON_METRICS_PORT:-8002}
model=${MODEL_NAME:-tiny-llava}
model_dir=${MODEL_DIR:-$root/testdata/tiny-llava-random}
gateway_bin=${GATEWAY_BIN:-$root/gateway/bin/vlcache-gateway}
work=$(mktemp -d "${TMPDIR:-/tmp}/vlcache-run.XXXXXX")

[[ -x "$gateway_bin" ]] || { echo "run: no $gateway_bin; run 'make build-gateway' (or 'make run')" >&2; exit 1; }

triton_pid= gateway_pid=
stop() {
  trap - INT TERM EXIT
  [[ -n "$gateway_pid" ]] && kill "$gateway_pid" 2>/dev/null && wait "$gateway_pid" 2>/dev/null || true
  [[ -n "$triton_pid" ]] && kill "$triton_pid" 2>/dev/null || true
  echo "run: stopped; logs in $work" >&2
}
trap stop INT TERM EXIT

triton_pid=$("$root/scripts/triton-serve.sh" --http "$http_port" --grpc "$grpc_port" --metrics "$metrics_port" \
  --log "$work/tritonserver.log")

"$gateway_bin" -listen "127.0.0.1:$gateway_port" -triton-grpc "127.0.0.1:$grpc_port" \
  -model "$model=$model_dir:$model" -log-format text "$@" 2>"$work/gateway.log" &
gateway_pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$gateway_port/readyz" >/dev/null 2>&1 && break
  kill -0 "$gateway_pid" 2>/dev/null || { cat "$work/gateway.log" >&2; exit 1; }
  sleep 0.2
done

image=$(ls "$model_dir"/golden_images/*.png 2>/dev/null | head -n1 || true)
if [[ -n "$image" ]]; then
  printf '{"model": "%s", "max_tokens": 16, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:image/png;base64,%s"}}, {"type": "text", "text": "What color is the circle?"}]}]}\n' \
    "$model" "$(base64 -w0 "$image")" >"$work/request.json"
fi

cat <<EOT
vlcache is up: gateway http://127.0.0.1:$gateway_port (OpenAI API at /v1), tritonserver grpc :$grpc_port.
Logs: $work/{gateway,tritonserver}.log. Ctrl-C stops both.

  # text chat, streamed
  curl -N http://127.0.0.1:$gateway_port/v1/chat/completions -H 'Content-Type: application/json' \\
    -d '{"model": "$model", "stream": true, "max_tokens": 16, "messages": [{"role": "user", "content": "Hello"}]}'

  # image chat keeping 10% of the prompt's KV cache (see usage.kv_cache)
  curl -i http://127.0.0.1:$gateway_port/v1/chat/completions -H 'Content-Type: application/json' \\
    -H 'X-KV-Cache-Ratio: 0.1' -H 'X-KV-Cache-Policy: vlcache' -d @$work/request.json
EOT
wait "$gateway_pid"
