#!/usr/bin/env bash
# `npm test`: install what is missing, then run every check and test — formatting and lints,
# host tests of the pure core, the pure core again on wasm32 (wasm-bindgen-test under node),
# and end-to-end tests of the built Worker on local workerd (Miniflare) with real local
# D1, KV and Durable Objects against fake upstreams on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh

step() { printf '\n\033[1;34m== %s\033[0m\n' "$1" >&2; shift; "$@"; }

step "rustfmt" cargo fmt --all -- --check
step "module layers (no cycles between modules)" node scripts/check-layers.mjs
step "clippy (host: pure core and its tests)" cargo clippy --all-targets --quiet -- -D warnings
step "clippy (wasm32: the Worker)" cargo clippy --target wasm32-unknown-unknown --lib --quiet -- -D warnings
step "host tests (pure core)" cargo test
# The fuzz targets are their own workspace (scripts/fuzz.sh runs them); checking that they still
# compile keeps them from rotting as the core changes.
step "fuzz targets compile" cargo check --quiet --manifest-path fuzz/Cargo.toml --bins
step "wasm32 tests (pure core under wasm-bindgen-test)" \
  env CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
  cargo test --target wasm32-unknown-unknown --test wasm32
step "build the Worker" bash scripts/build.sh
step "end-to-end tests (local workerd)" node --test --test-concurrency=2 --test-timeout=180000 tests/e2e/
