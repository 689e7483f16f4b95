#!/usr/bin/env bash
# Builds kernels/cuda, vlcache-cuda-ops-check and vlcache-cuda-bench against the
# CPU emulation in cudasim.h: the op check compares the GPU kernels' logic with
# the CPU reference without a GPU (about a minute on one core), and the
# benchmark runs its plumbing (cache layout, block-id scattering, reports) on a
# tiny decoder, where its timings mean nothing (emulated events report 1 ms).
# Kernel launches (<<<...>>>) and dynamic shared memory are rewritten into
# emulator calls in a scratch copy; the sources themselves are untouched.
#   bash kernels/tests/cuda/emulation/run.sh [BUILD_DIR]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../../.." && pwd)"
BUILD="${1:-$ROOT/build-cuda-emulation}"
mkdir -p "$BUILD/src"
rewrite() {  # CUDA source -> C++ on the emulator
  python3 - "$1" "$2" <<'PY'
import re, sys
s = open(sys.argv[1]).read()
s = s.replace("extern __shared__ float shared[];", "float* shared = sim::DynamicShared();")
s = re.sub(r'([\w:]+(?:<[^<>()]+>)?)<<<(.*?)>>>\(',
           lambda m: 'sim::Launch(sim::Cfg(%s), %s, ' % (m.group(2), m.group(1)), s, flags=re.S)
open(sys.argv[2], 'w').write(s)
PY
}
for f in "$ROOT"/kernels/cuda/*.cu; do rewrite "$f" "$BUILD/src/$(basename "$f" .cu).cc"; done
rewrite "$ROOT/kernels/tests/cuda/cuda_bench.cu" "$BUILD/bench.cc"
cp "$ROOT"/kernels/cuda/*.cuh "$ROOT"/kernels/cuda/cuda_ops.h "$BUILD/src/"
if [[ -f "$ROOT/.gpu-deps/lib/openblas_min.o" ]]; then
  BLAS=(-I"$ROOT/.gpu-deps/include" "$ROOT/.gpu-deps/lib/openblas_min.o")
else
  BLAS=(-I/usr/include/x86_64-linux-gnu/openblas-pthread -lopenblas)
fi
CXX=(g++ -std=c++17 -O1 -w -include cudasim.h -I"$HERE" -I"$BUILD/src" -I"$ROOT/kernels/include")
"${CXX[@]}" -c "$BUILD"/src/*.cc
mv ./*.o "$BUILD/" 2>/dev/null || true
OPS=()
for f in "$ROOT"/kernels/cuda/*.cu; do OPS+=("$BUILD/$(basename "$f" .cu).o"); done
"${CXX[@]}" "$ROOT/kernels/tests/cuda/cuda_ops_check.cc" "${OPS[@]}" \
    "$ROOT/kernels/cpu/cpu_ops.cc" "$ROOT/kernels/cpu/worker_pool.cc" "${BLAS[@]}" -lpthread \
    -o "$BUILD/vlcache-cuda-ops-check-emulated"
"${CXX[@]}" "$BUILD/bench.cc" "${OPS[@]}" -o "$BUILD/vlcache-cuda-bench-emulated"
timeout "${CHECK_TIMEOUT:-900}" "$BUILD/vlcache-cuda-ops-check-emulated"
mkdir -p "$BUILD/bench-out"
timeout "${CHECK_TIMEOUT:-900}" "$BUILD/vlcache-cuda-bench-emulated" --out "$BUILD/bench-out" \
    --layers 2 --hidden 64 --heads 4 --kv-heads 2 --head-dim 16 --intermediate 96 --vocab 50 \
    --lengths 64,130 --batches 1,3 --warmup 1 --steps 1 --prefill-m 70 --chunk-rows 16 \
    --block-tokens 5
test -s "$BUILD/bench-out/gpu-bench.md" && test -s "$BUILD/bench-out/gpu-bench.json"
python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); assert len(d["decode"]) == 16, d; print("bench JSON ok:", len(d["decode"]), "decode rows")' \
    "$BUILD/bench-out/gpu-bench.json"
