#!/usr/bin/env bash
# `npm run deploy`: apply D1 migrations to the remote database and deploy the Worker.
# Needs `wrangler login` (or CLOUDFLARE_API_TOKEN), real ids in wrangler.toml, and the
# ADMIN_TOKEN secret (`npx wrangler secret put ADMIN_TOKEN`). Never seeds demo data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
source scripts/env.sh
wrangler d1 migrations apply DB --remote
exec wrangler deploy "$@"
