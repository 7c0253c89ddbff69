#!/usr/bin/env bash
# Builds the Worker (build/index.js + build/index_bg.wasm). wrangler runs this as its build command.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
exec worker-build --release
