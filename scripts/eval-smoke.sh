#!/usr/bin/env bash
# Smoke runs of the evaluation harness through the real parts (make test-eval-smoke):
#  1. vlcache-eval through the engine runner (build/backend/tools/vlcache-run) on a few
#     fixture samples, policies full + vlcache, ratios 1 and 0.1, P1 + P2: full at 1 must
#     reproduce the fixture's reference predictions and the table must print;
#  2. vlcache-loadgen at small scale through a real tritonserver (our backend) and a real
#     gateway, plus direct gRPC to Triton: every request must succeed and the table print;
#  3. vlcache-bench at small scale, drawn by vlcache-benchplot: the table and plots appear.
# No assertion on timings. Ports: 127.0.0.1:18310-18312 (Triton), 18320 (gateway).
#
#   scripts/eval-smoke.sh [BUILD_DIR]     (default: build)
set -euo pipefail
repo_root=$(cd "$(dirname "$0")/.." && pwd)
cd "$repo_root"
build_dir=$(cd "${1:-build}" && pwd)
samples=${EVAL_SMOKE_SAMPLES:-8}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/eval-smoke.XXXXXX")
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

ready() { # the gateway's /readyz answers 200
  python3 -c 'import sys, urllib.request; sys.exit(0 if urllib.request.urlopen("http://127.0.0.1:18320/readyz", timeout=2).status == 200 else 1)' 2>/dev/null
}
fail() { echo "eval-smoke: FAIL: $*" >&2; exit 1; }
expect() { # file, fixed string
  grep -qF -- "$2" "$1" || { cat "$1" >&2; fail "$1 lacks: $2"; }
}

go build -o "$tmp/bin/" ./gateway/cmd/vlcache-eval ./gateway/cmd/vlcache-loadgen ./gateway/cmd/vlcache-gateway \
  ./gateway/cmd/vlcache-benchplot

echo "eval-smoke: vlcache-eval, $samples samples through $build_dir/backend/tools/vlcache-run" >&2
"$tmp/bin/vlcache-eval" -runner "$build_dir/backend/tools/vlcache-run" -limit "$samples" \
  -protocols P1,P2 -policies full,vlcache -keep-ratios 1,0.1 -check-reference \
  -out "$tmp/eval" -progress 10s >"$tmp/eval.md" || { cat "$tmp/eval.md" >&2; fail "vlcache-eval"; }
cat "$tmp/eval.md"
expect "$tmp/eval.md" "### P1, all (n = $samples per cell)"
expect "$tmp/eval.md" "### P2, all (n = $samples per cell)"
expect "$tmp/eval.md" "| P1 | full | $samples | 0 |"
expect "$tmp/eval.md" "| P2 | full | $samples | 0 |"
for f in summary.json predictions.jsonl accuracy.png accuracy.svg layers.png kept_P1_vlcache_0.1.png; do
  [[ -s "$tmp/eval/$f" ]] || fail "vlcache-eval wrote no $f"
done

echo "eval-smoke: vlcache-loadgen through tritonserver + gateway" >&2
triton_pid=$(VLCACHE_BUILD_DIR="$build_dir" scripts/triton-serve.sh --http 18310 --grpc 18311 --metrics 18312 \
  --log "$tmp/triton.log")
pids+=("$triton_pid")
"$tmp/bin/vlcache-gateway" -listen 127.0.0.1:18320 -triton-grpc 127.0.0.1:18311 \
  -model tiny-llava=testdata/tiny-llava-random:tiny-llava -log-format text >"$tmp/gateway.log" 2>&1 &
pids+=("$!")
for _ in $(seq 1 100); do
  ready && break
  kill -0 "${pids[-1]}" 2>/dev/null || { cat "$tmp/gateway.log" >&2; fail "the gateway exited"; }
  sleep 0.2
done
ready || { cat "$tmp/gateway.log" >&2; fail "the gateway is not ready"; }

"$tmp/bin/vlcache-loadgen" -gateway http://127.0.0.1:18320/v1 -served-model tiny-llava \
  -triton 127.0.0.1:18311 -model testdata/tiny-llava-random -clients 2 -requests 6 -frames 2 -samples 4 \
  -max-tokens 8 -keep-ratios 1,0.1 -max-duration 2m -out "$tmp/load" -progress 0 >"$tmp/load.md" \
  || { cat "$tmp/load.md" "$tmp/gateway.log" >&2; fail "vlcache-loadgen"; }
cat "$tmp/load.md"
expect "$tmp/load.md" "| gateway | all | 6 | 0 | 8.0 |"  # ignore_eos: every request runs to 8
expect "$tmp/load.md" "| triton | all | 6 | 0 | 8.0 |"
expect "$tmp/load.md" "### Gateway overhead"
[[ -s "$tmp/load/latency.png" && -s "$tmp/load/loadgen.json" ]] || fail "vlcache-loadgen wrote no plot or JSON"

echo "eval-smoke: vlcache-bench + vlcache-benchplot" >&2
"$build_dir/backend/tools/vlcache-bench" --model testdata/tiny-llava-random --prompt-tokens 200,400 \
  --batch 1 --keep-ratios 0.5,0.1 --tokens 4 --fit-max 4 --fit-pool-mb 4 --threads 2 \
  --out "$tmp/bench.json" >"$tmp/bench.txt" || { cat "$tmp/bench.txt" >&2; fail "vlcache-bench"; }
"$tmp/bin/vlcache-benchplot" -in "$tmp/bench.json" -out "$tmp/bench" >"$tmp/bench.md" \
  || { cat "$tmp/bench.md" >&2; fail "vlcache-benchplot"; }
cat "$tmp/bench.md"
expect "$tmp/bench.md" "| 400 | 1 | vlcache 0.1 |"
expect "$tmp/bench.md" "| full cache | "
[[ -s "$tmp/bench/bench.png" && -s "$tmp/bench/bench.svg" ]] || fail "vlcache-benchplot wrote no plot"
echo "eval-smoke: passed" >&2
