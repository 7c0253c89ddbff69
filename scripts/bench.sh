#!/usr/bin/env bash
# `npm run bench`: the translation core's host timings (per request, reply and stream chunk, per
# provider), then throughput and latency of upstream-direct vs a bare passthrough Worker vs the
# relay on local workerd, and the wasm's size (see examples/translate_bench.rs, bench/bench.mjs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
cargo run --quiet --release --example translate_bench
bash scripts/build.sh >/dev/null
exec node bench/bench.mjs "$@"
