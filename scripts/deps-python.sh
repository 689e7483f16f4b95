#!/usr/bin/env bash
# Python packages the Triton end-to-end tests and scripts/triton-serve.sh need:
# a real tritonserver (bundled in the nvidia-pytriton wheel), Triton's own gRPC
# client, and what the tests use to read the golden data. Idempotent: pip is
# only called when something is missing or at the wrong version.
set -euo pipefail
PYTHON=${PYTHON:-python3}
PYTRITON_VERSION=0.7.0

have_all() {
  "$PYTHON" - "$PYTRITON_VERSION" <<'PY'
import importlib.metadata as md, sys
want = {"nvidia-pytriton": sys.argv[1]}
try:
    for name, version in want.items():
        if md.version(name) != version:
            sys.exit(1)
    for name in ("tritonclient", "grpcio", "numpy", "pytest", "pillow"):
        md.version(name)
    import tritonclient.grpc  # noqa: F401  (the [grpc] extra)
except Exception:
    sys.exit(1)
PY
}

if ! have_all; then
  "$PYTHON" -m pip install -q "nvidia-pytriton==${PYTRITON_VERSION}" "tritonclient[grpc]" \
    numpy pytest pillow
fi

# Where the bundled server lives; printed so a failing CI log says what was found.
"$PYTHON" - <<'PY'
import importlib.util, os
spec = importlib.util.find_spec("pytriton")
root = os.path.join(list(spec.submodule_search_locations)[0], "tritonserver")
binary = os.path.join(root, "bin", "tritonserver")
if not os.access(binary, os.X_OK):
    raise SystemExit(f"deps-python: no executable tritonserver at {binary}")
print(f"deps-python: tritonserver at {binary}")
PY
