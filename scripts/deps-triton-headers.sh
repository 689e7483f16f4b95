#!/usr/bin/env bash
# Triton's C API headers (triton/core/tritonbackend.h, tritonserver.h) for
# building libtriton_vlcache.so. The pytriton wheel ships the server but not its
# headers; the crates.io package tritonserver-rs vendors Triton core's include/
# directory, so we take them from there with cargo (the registry's own client)
# at deps time, never at build time. Result: .deps/triton/include (gitignored).
#
# The headers must match the server the tests run: Triton 2.51 speaks
# TRITONBACKEND API 1.19 and TRITONSERVER API 1.34; both are checked below.
set -euo pipefail
cd "$(dirname "$0")/.."

CRATE=tritonserver-rs
CRATE_VERSION=0.4.1
WANT_BACKEND_API=19
WANT_SERVER_API=34
DEST=.deps/triton/include
header="$DEST/triton/core/tritonbackend.h"

api_minor() {  # file macro -> minor version number
  sed -n "s/^#define $2 \([0-9]*\).*/\1/p" "$1"
}

check() {
  [[ -f "$header" && -f "$DEST/triton/core/tritonserver.h" ]] || return 1
  [[ "$(api_minor "$header" TRITONBACKEND_API_VERSION_MINOR)" == "$WANT_BACKEND_API" ]] || return 1
  [[ "$(api_minor "$DEST/triton/core/tritonserver.h" TRITONSERVER_API_VERSION_MINOR)" == "$WANT_SERVER_API" ]]
}

if check; then
  echo "deps-triton-headers: $DEST already holds API 1.$WANT_BACKEND_API headers"
  exit 0
fi

command -v cargo >/dev/null || { echo "deps-triton-headers: cargo is needed" >&2; exit 1; }
CARGO_HOME=${CARGO_HOME:-$HOME/.cargo}

find_crate() {
  ls "$CARGO_HOME"/registry/cache/*/"$CRATE-$CRATE_VERSION.crate" 2>/dev/null | head -n1
}

crate_file=$(find_crate || true)
if [[ -z "$crate_file" ]]; then
  # A throwaway package that depends on the crate: `cargo fetch` downloads its
  # .crate (and its dependencies) into cargo's registry cache; nothing is built.
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  mkdir -p "$work/src"
  cat >"$work/Cargo.toml" <<TOML
[package]
name = "vlcache-fetch-triton-headers"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
$CRATE = { version = "=$CRATE_VERSION", default-features = false }
TOML
  echo 'fn main() {}' >"$work/src/main.rs"
  (cd "$work" && cargo fetch --quiet)
  crate_file=$(find_crate || true)
  [[ -n "$crate_file" ]] || { echo "deps-triton-headers: cargo fetch left no $CRATE-$CRATE_VERSION.crate" >&2; exit 1; }
fi

rm -rf .deps/triton
mkdir -p "$DEST/triton/core"
prefix="$CRATE-$CRATE_VERSION/core"
for h in tritonbackend.h tritonserver.h tritonrepoagent.h tritoncache.h; do
  tar -xzOf "$crate_file" "$prefix/include/triton/core/$h" >"$DEST/triton/core/$h"
done
tar -xzOf "$crate_file" "$prefix/LICENSE" >.deps/triton/LICENSE

check || { echo "deps-triton-headers: headers from $crate_file are not API 1.$WANT_BACKEND_API / 1.$WANT_SERVER_API" >&2; exit 1; }
echo "deps-triton-headers: installed Triton API 1.$WANT_BACKEND_API headers into $DEST"
