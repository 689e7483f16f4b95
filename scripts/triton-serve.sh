#!/usr/bin/env bash
# Start a real tritonserver on 127.0.0.1 with a model repository (triton_models/
# by default) and the vlcache backend built by CMake, wait until it is ready,
# print its PID and leave it running in the background (the caller stops it
# with `kill PID`). With --foreground it runs attached to the terminal instead.
#
#   scripts/triton-serve.sh --http PORT --grpc PORT --metrics PORT
#       [--model-repo DIR] [--log FILE] [--ready-timeout SECONDS] [--foreground]
#       [extra tritonserver arguments...]
#
# Environment: VLCACHE_BUILD_DIR (default build/) holds triton_backends/vlcache/
# libtriton_vlcache.so; TRITONSERVER overrides the server binary (default: the
# one bundled in the nvidia-pytriton wheel, see scripts/deps-python.sh).
set -euo pipefail
repo_root=$(cd "$(dirname "$0")/.." && pwd)

usage() { sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }

http_port= grpc_port= metrics_port=
model_repo="$repo_root/triton_models"
log_file=
ready_timeout=180
foreground=0
extra=()
while (($#)); do
  case "$1" in
    --http) http_port=$2; shift 2 ;;
    --grpc) grpc_port=$2; shift 2 ;;
    --metrics) metrics_port=$2; shift 2 ;;
    --model-repo) model_repo=$2; shift 2 ;;
    --log) log_file=$2; shift 2 ;;
    --ready-timeout) ready_timeout=$2; shift 2 ;;
    --foreground) foreground=1; shift ;;
    -h|--help) usage ;;
    --) shift; extra+=("$@"); break ;;
    *) extra+=("$1"); shift ;;
  esac
done
[[ -n "$http_port" && -n "$grpc_port" && -n "$metrics_port" ]] || usage

build_dir=${VLCACHE_BUILD_DIR:-$repo_root/build}
backend_dir=$(cd "$build_dir" 2>/dev/null && pwd)/triton_backends
if [[ ! -f "$backend_dir/vlcache/libtriton_vlcache.so" ]]; then
  echo "triton-serve: no $backend_dir/vlcache/libtriton_vlcache.so; build it first (make build-cpp)" >&2
  exit 1
fi
[[ -d "$model_repo" ]] || { echo "triton-serve: no model repository $model_repo" >&2; exit 1; }
model_repo=$(cd "$model_repo" && pwd)

server=${TRITONSERVER:-}
if [[ -z "$server" ]]; then
  server=$(python3 -c 'import importlib.util, os
spec = importlib.util.find_spec("pytriton")
print(os.path.join(list(spec.submodule_search_locations)[0], "tritonserver", "bin", "tritonserver") if spec else "")')
fi
if [[ -z "$server" || ! -x "$server" ]]; then
  echo "triton-serve: tritonserver not found (run scripts/deps-python.sh or set TRITONSERVER)" >&2
  exit 1
fi

args=(--model-repository="$model_repo" --backend-directory="$backend_dir"
      --http-address=127.0.0.1 --http-port="$http_port"
      --grpc-address=127.0.0.1 --grpc-port="$grpc_port"
      --metrics-address=127.0.0.1 --metrics-port="$metrics_port" --allow-metrics=true
      "${extra[@]}")

if ((foreground)); then
  echo "triton-serve: $server ${args[*]}" >&2
  exec "$server" "${args[@]}"
fi

# A server already on these ports would answer the readiness probe for ours.
if ! python3 - "$http_port" "$grpc_port" "$metrics_port" <<'PY'
import socket, sys
for port in sys.argv[1:]:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", int(port)))
        except OSError:
            sys.exit(f"triton-serve: 127.0.0.1:{port} is already in use")
PY
then
  exit 1
fi

log_file=${log_file:-${TMPDIR:-/tmp}/tritonserver-$http_port.log}
mkdir -p "$(dirname "$log_file")"
# Detached from our stdout so that `pid=$(scripts/triton-serve.sh ...)` returns.
setsid "$server" "${args[@]}" >"$log_file" 2>&1 </dev/null &
pid=$!

ready_url="http://127.0.0.1:$http_port/v2/health/ready"
deadline=$((SECONDS + ready_timeout))
while :; do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "triton-serve: tritonserver exited before it was ready; last lines of $log_file:" >&2
    tail -n 40 "$log_file" >&2
    exit 1
  fi
  if python3 - "$ready_url" <<'PY' 2>/dev/null
import sys, urllib.request
sys.exit(0 if urllib.request.urlopen(sys.argv[1], timeout=2).status == 200 else 1)
PY
  then
    break
  fi
  if ((SECONDS >= deadline)); then
    echo "triton-serve: not ready after ${ready_timeout}s; stopping it. Last lines of $log_file:" >&2
    tail -n 40 "$log_file" >&2
    kill "$pid" 2>/dev/null || true
    exit 1
  fi
  sleep 0.5
done
echo "triton-serve: ready on http 127.0.0.1:$http_port, grpc :$grpc_port, metrics :$metrics_port; log $log_file" >&2
echo "$pid"
