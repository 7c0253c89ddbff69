#!/usr/bin/env bash
# `npm run dev`: install what is missing, prepare local D1/KV with a demo tenant, key and a
# mock channel, then serve the relay on http://127.0.0.1:8787 on local workerd.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh

if [ ! -f .dev.vars ]; then
  cp .dev.vars.example .dev.vars
  echo "[dev] created .dev.vars from .dev.vars.example" >&2
fi

# Local state lives in .wrangler/state and survives restarts; both steps are idempotent.
wrangler d1 migrations apply DB --local >/dev/null
node scripts/seed-demo.mjs

demo_key=$(grep -E '^DEMO_API_KEY=' .dev.vars | cut -d= -f2-)
cat >&2 <<MSG

  edgerelay is starting on http://127.0.0.1:8787
  try:  curl http://127.0.0.1:8787/v1/chat/completions -H "Authorization: Bearer ${demo_key}" \\
          -H "Content-Type: application/json" -d '{"model":"demo","messages":[{"role":"user","content":"Hello"}]}'

MSG
exec wrangler dev "$@"
