#!/usr/bin/env bash
# `npm run bench`: build the Worker, then measure upstream-direct vs a bare passthrough Worker
# vs the relay on local workerd, and print the figures (see bench/bench.mjs).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
bash scripts/build.sh >/dev/null
exec node bench/bench.mjs "$@"
