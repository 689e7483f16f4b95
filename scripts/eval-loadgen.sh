#!/usr/bin/env bash
# Load benchmark on one machine: starts tritonserver (triton_models/, our backend from
# BUILD_DIR) and the gateway on loopback, runs vlcache-loadgen against both (gateway and
# direct gRPC), writes OUT_DIR/{table.md,loadgen.json,latency.png,latency.svg}, stops both.
#
#   scripts/eval-loadgen.sh BUILD_DIR OUT_DIR [vlcache-loadgen flags...]
#
# Defaults: the random tiny model, eos ignored (every request runs to -max-tokens),
# 4 clients, 24 requests per target, 8 images, 100 tokens, keep ratios 1,0.5,0.1.
# Ports: 127.0.0.1:18330-18332 (Triton), 18340 (gateway).
set -euo pipefail
repo_root=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo_root"
[[ $# -ge 2 ]] || { sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
build_dir=$(cd "$1" && pwd)
out_dir=$2
shift 2
tmp=$(mktemp -d "${TMPDIR:-/tmp}/eval-loadgen.XXXXXX")
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # tritonserver is not our child (setsid), so poll; it unloads models before it exits.
  for pid in "${pids[@]}"; do
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

go build -o "$tmp/bin/" ./gateway/cmd/vlcache-loadgen ./gateway/cmd/vlcache-gateway
triton_pid=$(VLCACHE_BUILD_DIR="$build_dir" scripts/triton-serve.sh --http 18330 --grpc 18331 --metrics 18332 \
  --log "$tmp/triton.log")
pids+=("$triton_pid")
"$tmp/bin/vlcache-gateway" -listen 127.0.0.1:18340 -triton-grpc 127.0.0.1:18331 \
  -model tiny-llava=testdata/tiny-llava-random:tiny-llava -log-format text >"$tmp/gateway.log" 2>&1 &
pids+=("$!")
ready() {
  python3 -c 'import sys, urllib.request; sys.exit(0 if urllib.request.urlopen("http://127.0.0.1:18340/readyz", timeout=2).status == 200 else 1)' 2>/dev/null
}
for _ in $(seq 1 100); do ready && break; sleep 0.2; done
ready || { cat "$tmp/gateway.log" >&2; echo "eval-loadgen: the gateway is not ready" >&2; exit 1; }

"$tmp/bin/vlcache-loadgen" -gateway http://127.0.0.1:18340/v1 -served-model tiny-llava \
  -triton 127.0.0.1:18331 -model testdata/tiny-llava-random -clients 4 -requests 24 -frames 8 \
  -max-tokens 100 -keep-ratios 1,0.5,0.1 -out "$out_dir" "$@"
