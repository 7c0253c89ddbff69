#!/usr/bin/env bash
# `npm run profile`: a V8 CPU profile of the relay Worker's isolate under wrk load, written to
# bench/out/relay.cpuprofile, with the top functions in µs per request (bench/profile.mjs).
#   npm run profile [-- --stream] [-- --row relay-limited] [-- --seconds 10]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
source scripts/bench-tools.sh
ensure_wrk
ensure_taskset
build_if_stale
exec node bench/profile.mjs "$@"
