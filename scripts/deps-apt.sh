#!/usr/bin/env bash
# Debian packages the build and the tests need. Idempotent.
set -euo pipefail
pkgs=(cmake ninja-build g++ pkg-config libopenblas-dev nlohmann-json3-dev libgtest-dev
      redis-server protobuf-compiler libpng-dev libjpeg62-turbo-dev)
missing=()
for p in "${pkgs[@]}"; do
  dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p")
done
if ((${#missing[@]})); then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
