#!/usr/bin/env bash
# GPU check of the CUDA ops: builds the op check and the benchmark with plain
# nvcc/g++ (no CMake project, OpenBLAS, GTest or JSON library needed on the GPU
# machine), then runs both and leaves everything under OUT.
#
#   bash scripts/gpu-check.sh --prepare-deps   # here: fill .gpu-deps/ (not committed)
#   bash scripts/gpu-check.sh OUT              # on the GPU machine
#
# The CPU reference needs cblas: --prepare-deps extracts from Debian's static
# OpenBLAS only the members that cblas_sgemm/sgemv pull in (one relocatable
# object with no dependency beyond libc/pthread) plus the two headers. Without
# .gpu-deps the system OpenBLAS is used.
# Tunables (environment): CUDA_ARCH (default: the device's, else 90),
# BENCH_ARGS (extra vlcache-cuda-bench flags), JOBS, CHECK_TIMEOUT, BENCH_TIMEOUT.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DEPS="$ROOT/.gpu-deps"

if [[ "${1:-}" == "--prepare-deps" ]]; then
  archive=/usr/lib/x86_64-linux-gnu/openblas-pthread/libopenblas.a
  headers=/usr/include/x86_64-linux-gnu/openblas-pthread
  [[ -f "$archive" && -f "$headers/cblas.h" ]] || { echo "need libopenblas-dev (pthread flavour)" >&2; exit 1; }
  mkdir -p "$DEPS/include" "$DEPS/lib"
  cp "$headers/cblas.h" "$headers/openblas_config.h" "$DEPS/include/"
  ld -r -u cblas_sgemm -u cblas_sgemv -u openblas_set_num_threads "$archive" \
     -o "$DEPS/lib/openblas_min.o"
  grep -qx '/.gpu-deps/' "$ROOT/.git/info/exclude" 2>/dev/null || echo '/.gpu-deps/' >> "$ROOT/.git/info/exclude"
  du -sh "$DEPS"
  exit 0
fi

OUT="${1:?usage: gpu-check.sh OUT | --prepare-deps}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
BUILD="${BUILD_DIR:-$ROOT/build-cuda-check}"
mkdir -p "$BUILD"
JOBS="${JOBS:-$(nproc)}"

{ nvidia-smi -L || true; nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv || true; nvcc --version | tail -2; } > "$OUT/nvidia-smi.txt" 2>&1
if [[ -z "${CUDA_ARCH:-}" ]]; then
  CUDA_ARCH="$( (nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null || true) | head -1 | tr -d '. ')"
  [[ -n "$CUDA_ARCH" ]] || CUDA_ARCH=90
fi

if [[ -f "$DEPS/lib/openblas_min.o" ]]; then
  BLAS_INC=(-I"$DEPS/include"); BLAS_LIB=("$DEPS/lib/openblas_min.o")
else
  BLAS_INC=(-I/usr/include/x86_64-linux-gnu/openblas-pthread -I/usr/include/openblas); BLAS_LIB=(-lopenblas)
fi
INC=(-I"$ROOT/kernels/include" -I"$ROOT/kernels/cuda")
NVFLAGS=(-std=c++17 -O3 -gencode "arch=compute_${CUDA_ARCH},code=sm_${CUDA_ARCH}" "${INC[@]}")

echo "building for sm_${CUDA_ARCH} in $BUILD" | tee "$OUT/build.log"
build() {  # one translation unit; prints its log on failure
  local src="$1" obj="$BUILD/$(basename "$1").o"
  case "$src" in
    *.cu) nvcc "${NVFLAGS[@]}" -c "$src" -o "$obj" ;;
    *) g++ -std=c++17 -O3 -Wall "${INC[@]}" "${BLAS_INC[@]}" -c "$src" -o "$obj" ;;
  esac
}
SOURCES=("$ROOT"/kernels/cuda/*.cu "$ROOT/kernels/cpu/cpu_ops.cc" "$ROOT/kernels/cpu/worker_pool.cc"
         "$ROOT/kernels/tests/cuda/cuda_ops_check.cc" "$ROOT/kernels/tests/cuda/cuda_bench.cu")
pids=()
for src in "${SOURCES[@]}"; do
  while (( $(jobs -rp | wc -l) >= JOBS )); do sleep 0.2; done
  build "$src" >>"$OUT/build.log" 2>&1 &
  pids+=($!)
done
fail=0
for p in "${pids[@]}"; do wait "$p" || fail=1; done
if (( fail )); then echo "build failed, see $OUT/build.log" >&2; tail -40 "$OUT/build.log" >&2; exit 1; fi
# The toolkit's own lib folders go into the binaries' rpath: the GPU machine's
# loader need not know where libcublas lives.
NVCC_DIR="$(dirname "$(command -v nvcc)")"
RPATH=()
for d in "$NVCC_DIR/../lib64" "$NVCC_DIR/../targets/x86_64-linux/lib" "$NVCC_DIR/../lib"; do
  [[ -d "$d" ]] && RPATH+=(-Xlinker -rpath -Xlinker "$(cd "$d" && pwd)")
done
CUDA_OBJS=()
for f in "$ROOT"/kernels/cuda/*.cu; do CUDA_OBJS+=("$BUILD/$(basename "$f").o"); done
nvcc -o "$BUILD/vlcache-cuda-ops-check" "$BUILD/cuda_ops_check.cc.o" "${CUDA_OBJS[@]}" \
     "$BUILD/cpu_ops.cc.o" "$BUILD/worker_pool.cc.o" "${BLAS_LIB[@]}" -lcublas -lpthread ${RPATH[@]+"${RPATH[@]}"} >>"$OUT/build.log" 2>&1
nvcc -o "$BUILD/vlcache-cuda-bench" "$BUILD/cuda_bench.cu.o" "${CUDA_OBJS[@]}" -lcublas ${RPATH[@]+"${RPATH[@]}"} >>"$OUT/build.log" 2>&1
echo "built" | tee -a "$OUT/build.log"

status=0
timeout "${CHECK_TIMEOUT:-180}" "$BUILD/vlcache-cuda-ops-check" 2>&1 | tee "$OUT/gpu-ops-check.txt" || status=1
# shellcheck disable=SC2086
timeout "${BENCH_TIMEOUT:-300}" "$BUILD/vlcache-cuda-bench" --out "$OUT" ${BENCH_ARGS:-} 2>&1 | tee "$OUT/gpu-bench.log" || status=1
exit $status
