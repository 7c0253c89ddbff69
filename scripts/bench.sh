#!/usr/bin/env bash
# `npm run bench`: the translation core's host timings (per request, reply and stream chunk, per
# provider), then on local workerd, in one run: upstream-direct vs a bare passthrough Worker vs the
# relay's rows vs the Portkey AI Gateway (req/s, p50/p99, TTFB, CPU per request, ratios),
# resilience, one Limiter object's decisions/s and memory on a long stream (bench/bench.mjs), and
# the wasm's size. Installs wrk (apt-get) and Portkey (bench/.portkey) on first use.
# Knobs: BENCH_SECONDS, BENCH_CONCURRENCY, BENCH_ONLY, … (see bench/bench.mjs). With BENCH_ONLY,
# the host timings run only when it names `translate`.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
source scripts/bench-tools.sh
ensure_wrk
ensure_taskset
if [ -z "${BENCH_ONLY:-}" ] || [[ ",$BENCH_ONLY," == *,portkey,* ]]; then ensure_portkey; fi
if [ -z "${BENCH_ONLY:-}" ] || [[ ",$BENCH_ONLY," == *,translate,* ]]; then
  cargo run --quiet --release --example translate_bench
fi
build_if_stale
exec node bench/bench.mjs "$@"
