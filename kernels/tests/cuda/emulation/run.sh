#!/usr/bin/env bash
# Builds kernels/cuda and vlcache-cuda-ops-check against the CPU emulation in
# cudasim.h and runs the check: the GPU kernels' logic against the CPU
# reference without a GPU (about a minute on one core). Kernel launches
# (<<<...>>>) and dynamic shared memory are rewritten into emulator calls in a
# scratch copy; the sources themselves are untouched.
#   bash kernels/tests/cuda/emulation/run.sh [BUILD_DIR]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../../../.." && pwd)"
BUILD="${1:-$ROOT/build-cuda-emulation}"
mkdir -p "$BUILD/src"
for f in "$ROOT"/kernels/cuda/*.cu; do
  python3 - "$f" "$BUILD/src/$(basename "$f" .cu).cc" <<'PY'
import re, sys
s = open(sys.argv[1]).read()
s = s.replace("extern __shared__ float shared[];", "float* shared = sim::DynamicShared();")
s = re.sub(r'([\w:]+(?:<[^<>()]+>)?)<<<(.*?)>>>\(',
           lambda m: 'sim::Launch(sim::Cfg(%s), %s, ' % (m.group(2), m.group(1)), s, flags=re.S)
open(sys.argv[2], 'w').write(s)
PY
done
cp "$ROOT"/kernels/cuda/*.cuh "$ROOT"/kernels/cuda/cuda_ops.h "$BUILD/src/"
if [[ -f "$ROOT/.gpu-deps/lib/openblas_min.o" ]]; then
  BLAS=(-I"$ROOT/.gpu-deps/include" "$ROOT/.gpu-deps/lib/openblas_min.o")
else
  BLAS=(-I/usr/include/x86_64-linux-gnu/openblas-pthread -lopenblas)
fi
g++ -std=c++17 -O1 -w -include cudasim.h -I"$HERE" -I"$BUILD/src" -I"$ROOT/kernels/include" \
    "$BUILD"/src/*.cc "$ROOT/kernels/tests/cuda/cuda_ops_check.cc" \
    "$ROOT/kernels/cpu/cpu_ops.cc" "$ROOT/kernels/cpu/worker_pool.cc" "${BLAS[@]}" -lpthread \
    -o "$BUILD/vlcache-cuda-ops-check-emulated"
timeout "${CHECK_TIMEOUT:-900}" "$BUILD/vlcache-cuda-ops-check-emulated"
